"""One droplet against a swarm of three on the lab: deploy and update times, and failed requests.

    .venv/bin/python benchmarks/swarm.py [--keep]

Starts its own lab (name sdswarm, port 8796, subnet 10.74.0.0/24). For N = 1 (droplet
`one-1`, Docker Compose) and then N = 3 (droplets `three-1..3`, Docker Swarm) it runs a full
deploy, an update-only with no change and an update-only after the api's version changed, the
last one with lab/prober.py sending 20 req/s to /, 5 to /api/health and 1 to /api/notes.
Prints wall time per run and requests sent and failed during the update. Asserts nothing.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labrun import LabRun  # noqa: E402

from lab.prober import DEFAULT_ROUTES, Prober  # noqa: E402

LAB = {"LAB_NAME": "sdswarm", "LAB_API_PORT": "8796", "LAB_SUBNET": "10.74.0.0/24"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args()
    # the prober's /api traffic must stay inside the API's own rate limit
    lab = LabRun(LAB, CHECK_RATE_LIMIT="false", RATE_LIMIT_API_RPM="1200")
    init = lab.stack / "api" / "app" / "__init__.py"
    rows = []
    try:
        lab.up()
        (lab.tmp / "lab.env").write_text(re.sub(r"(?m)^RATE_LIMIT_API_RPM=.*$", "RATE_LIMIT_API_RPM=1200",
                                                (lab.tmp / "lab.env").read_text()))
        for nodes, name in ((1, "one-1"), (3, "three-1")):
            extra = {"NODES": str(nodes), "DROPLET_NAME": name}
            full, _ = lab.inv("deploy", extra=extra)
            ip = lab.last_run()["target"]["ip"]
            same, _ = lab.inv("deploy", "--update-only", extra=extra)
            init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "5.{nodes}.0"', init.read_text()))
            with Prober(ip, lab.values["DOMAIN"], DEFAULT_ROUTES) as prober:
                changed, _ = lab.inv("deploy", "--update-only", extra=extra)
            s = prober.report.summary()
            rows.append((nodes, full, same, changed, s["sent"], s["failed"], s["p99_ms"]))
        print(f"{'N':>2} {'full s':>8} {'update, no change s':>20} {'update, api changed s':>22} "
              f"{'requests':>9} {'failed':>7} {'p99 ms':>7}")
        for nodes, full, same, changed, sent, failed, p99 in rows:
            print(f"{nodes:>2} {full:8.1f} {same:20.1f} {changed:22.1f} {sent:9d} {failed:7d} {p99:7.1f}")
        return 0
    finally:
        if not args.keep:
            lab.down()


if __name__ == "__main__":
    raise SystemExit(main())
