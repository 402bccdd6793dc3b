#!/usr/bin/env bash
# The test command: set up everything on a fresh machine, then run the whole test suite.
# With arguments, one pytest with them (e.g. scripts/test.sh -m "not lab" -x); without, the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# Two lanes on a 2-core machine: everything but tests/e2e in one pytest process; in the other,
# the lab's end-to-end run (tests/e2e: one lab, its deployment, the fault matrix, releases under
# traffic, backups, rotation, day-2; mostly waiting on its droplet), then the swarm's (its own
# lab of three droplets). Three suites at once slowed the lab droplet so much that its api's
# health budget (1.5 s) ran out under the prober (CI, 2026-12-07: 1 request in 3,742): two at
# most. The lab images they share are built once first. The lane's output follows the rest's.
# Every test's time lands in .test-logs/<lane>.xml (JUnit): what balances the lanes.
mkdir -p .test-logs
e2e_log=.test-logs/e2e.log
swarm_log=.test-logs/swarm.log
.venv/bin/python -c 'from lab import config, control; control.build_images(config.load({}))'
(
  set +e   # a failed e2e must not end the lane (set -e is inherited): the swarm's result is wanted too
  .venv/bin/python -m pytest tests/e2e --ignore=tests/e2e/test_swarm.py --durations=15 \
    --junitxml=.test-logs/e2e.xml >"$e2e_log" 2>&1
  echo $? >.test-logs/e2e.rc
  .venv/bin/python -m pytest tests/e2e/test_swarm.py --durations=5 --junitxml=.test-logs/swarm.xml >"$swarm_log" 2>&1
  echo $? >.test-logs/swarm.rc
) &
lane=$!
trap 'kill "$lane" 2>/dev/null' INT TERM
set +e
.venv/bin/python -m pytest --ignore=tests/e2e --durations=15 --junitxml=.test-logs/rest.xml
rest=$?
wait "$lane"
e2e_rc=$(cat .test-logs/e2e.rc 2>/dev/null || echo 1)
swarm_rc=$(cat .test-logs/swarm.rc 2>/dev/null || echo 1)
echo
echo "==> tests/e2e without the swarm (run beside the rest; also in $e2e_log)"
cat "$e2e_log"
echo
echo "==> tests/e2e/test_swarm.py (after it; also in $swarm_log)"
cat "$swarm_log"
echo "exit: rest $rest, e2e $e2e_rc, swarm $swarm_rc"
[ "$rest" -eq 0 ] && [ "$e2e_rc" -eq 0 ] && [ "$swarm_rc" -eq 0 ]
