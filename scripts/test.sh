#!/usr/bin/env bash
# The test command: set up everything on a fresh machine, then run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not lab" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two workers, each test folder whole on one (tests/conftest.py): the lab's end-to-end run,
# mostly waiting on its droplet, overlaps the rest. TEST_WORKERS=0 runs everything in one process.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadgroup --durations=25 "$@"
