#!/usr/bin/env bash
# The test command: set up everything on a fresh machine, then run the whole test suite.
# With arguments, one pytest with them (e.g. scripts/test.sh -m "not lab" -x); without, the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# The lab's end-to-end run (tests/e2e: one lab, its deployment, the fault matrix, releases under
# traffic, backups, day-2; mostly waiting on its droplet) runs beside everything else in its own
# pytest process; the swarm's end-to-end run (its own lab of three droplets) follows the rest.
# Three suites at once on a 2-core machine slowed the lab droplet so much that its api's health
# budget (1.5 s) ran out under the prober (CI, 2026-12-07: 1 request in 3,742): two at most.
# The lab images they share are built once first. Their output follows when all are done.
mkdir -p .test-logs
e2e_log=.test-logs/e2e.log
.venv/bin/python -c 'from lab import config, control; control.build_images(config.load({}))'
.venv/bin/python -m pytest tests/e2e --ignore=tests/e2e/test_swarm.py --durations=15 >"$e2e_log" 2>&1 &
e2e=$!
trap 'kill "$e2e" 2>/dev/null' INT TERM
set +e
.venv/bin/python -m pytest --ignore=tests/e2e --durations=15 && \
  .venv/bin/python -m pytest tests/e2e/test_swarm.py --durations=5
rest=$?
wait "$e2e"
e2e_rc=$?
echo
echo "==> tests/e2e (run beside the rest; also in $e2e_log)"
cat "$e2e_log"
echo "exit: rest $rest, e2e $e2e_rc"
[ "$rest" -eq 0 ] && [ "$e2e_rc" -eq 0 ]
