#!/usr/bin/env bash
# The test command: set up everything on a fresh machine, then run the whole test suite.
# With arguments, one pytest with them (e.g. scripts/test.sh -m "not lab" -x); without, the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# Two lanes on a 2-core machine, two pytest processes at a time (three at once slowed the lab
# droplet so much that its api's health budget, 1.5 s, ran out under the prober: CI, 2026-12-07,
# 1 request in 3,742). In the background: the lab's end-to-end run (tests/e2e: one lab, its
# deployment, the fault matrix, releases under traffic, backups, rotation, day-2), then the
# suites that start labs and engines of their own (LATE). In front: everything else, then the
# swarm's end-to-end run (its own lab of three droplets). LATE is chosen from the lanes' JUnit
# times (benchmarks/ci_lanes.py) so both lanes take about as long: at 08885f9 the rest took
# 10.5 min, swarm 15.7, e2e 18.6, tests/lab 6.4, tests/remote 2.4, tests/cloud 1.3; swarm
# rollouts then lost 20 s to Swarm's update monitor and 5 s between replicas each (12.4 min
# alone since), so tests/remote moved to the front lane. The lab
# images they share are built once first. The background lane's output follows the front one's.
# Every test's time lands in .test-logs/<suite>.xml (JUnit).
LATE=(tests/lab tests/cloud)
mkdir -p .test-logs
e2e_log=.test-logs/e2e.log
late_log=.test-logs/late.log
swarm_log=.test-logs/swarm.log
.venv/bin/python -c 'from lab import config, control; control.build_images(config.load({}))'
(
  set +e   # a failed e2e must not end the lane (set -e is inherited): the other results are wanted too
  .venv/bin/python -m pytest tests/e2e --ignore=tests/e2e/test_swarm.py --durations=15 \
    --junitxml=.test-logs/e2e.xml >"$e2e_log" 2>&1
  echo $? >.test-logs/e2e.rc
  .venv/bin/python -m pytest "${LATE[@]}" --durations=10 --junitxml=.test-logs/late.xml >"$late_log" 2>&1
  echo $? >.test-logs/late.rc
) &
lane=$!
trap 'kill "$lane" 2>/dev/null' INT TERM
set +e
.venv/bin/python -m pytest --ignore=tests/e2e "${LATE[@]/#/--ignore=}" --durations=15 --junitxml=.test-logs/rest.xml
rest=$?
.venv/bin/python -m pytest tests/e2e/test_swarm.py --durations=5 --junitxml=.test-logs/swarm.xml >"$swarm_log" 2>&1
swarm_rc=$?
wait "$lane"
e2e_rc=$(cat .test-logs/e2e.rc 2>/dev/null || echo 1)
late_rc=$(cat .test-logs/late.rc 2>/dev/null || echo 1)
echo
echo "==> tests/e2e/test_swarm.py (after the rest; also in $swarm_log)"
cat "$swarm_log"
echo
echo "==> tests/e2e without the swarm (run beside; also in $e2e_log)"
cat "$e2e_log"
echo
echo "==> ${LATE[*]} (after it; also in $late_log)"
cat "$late_log"
echo "exit: rest $rest, swarm $swarm_rc, e2e $e2e_rc, ${LATE[*]} $late_rc"
[ "$rest" -eq 0 ] && [ "$swarm_rc" -eq 0 ] && [ "$e2e_rc" -eq 0 ] && [ "$late_rc" -eq 0 ]
