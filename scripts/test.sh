#!/usr/bin/env bash
# The test command: set up everything on a fresh machine, then run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not lab" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
