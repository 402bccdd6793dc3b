#!/usr/bin/env bash
# The main job on the local lab: set up, start a local DigitalOcean, deploy the stack into it,
# and say what to try next. Needs root or sudo (apt, Docker engine). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
inv lab.up
mkdir -p .lab
inv lab.env > .lab/lab.env
chmod 600 .lab/lab.env
status=0
inv deploy --env-file .lab/lab.env || status=$?
echo  # inv deploy's last line named the run folder
echo "try next:   inv deploy --update-only --env-file .lab/lab.env"
echo "            inv verify --env-file .lab/lab.env"
echo "            inv lab.down    # removes everything the lab made"
exit $status
