#!/usr/bin/env bash
# The test command: set up everything on a fresh machine, then run the whole test suite.
# With arguments, one pytest with them (e.g. scripts/test.sh -m "not lab" -x); without, the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# Three pytest processes side by side, each mostly waiting on its own droplets: the lab's
# end-to-end run (tests/e2e: one lab, its deployment, the fault matrix, releases under traffic,
# backups, day-2), the swarm's (its own lab of three droplets) and everything else. The lab
# images they share are built once first, so two labs never build the same image at once.
# Their output follows when all are done.
mkdir -p .test-logs
e2e_log=.test-logs/e2e.log
swarm_log=.test-logs/e2e-swarm.log
.venv/bin/python -c 'from lab import config, control; control.build_images(config.load({}))'
.venv/bin/python -m pytest tests/e2e --ignore=tests/e2e/test_swarm.py --durations=15 >"$e2e_log" 2>&1 &
e2e=$!
.venv/bin/python -m pytest tests/e2e/test_swarm.py --durations=5 >"$swarm_log" 2>&1 &
swarm=$!
trap 'kill "$e2e" "$swarm" 2>/dev/null' INT TERM
set +e
.venv/bin/python -m pytest --ignore=tests/e2e --durations=15
rest=$?
wait "$e2e"
e2e_rc=$?
wait "$swarm"
swarm_rc=$?
echo
echo "==> tests/e2e (run beside the rest; also in $e2e_log)"
cat "$e2e_log"
echo
echo "==> tests/e2e/test_swarm.py (run beside the rest; also in $swarm_log)"
cat "$swarm_log"
echo "exit: rest $rest, e2e $e2e_rc, swarm $swarm_rc"
[ "$rest" -eq 0 ] && [ "$e2e_rc" -eq 0 ] && [ "$swarm_rc" -eq 0 ]
