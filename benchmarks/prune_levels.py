"""Disk use over 20 deploys of changed code on the lab: does the pruning level it off?
(issue 24: the disk used after the 20th within 5% of after the 5th; pruning runs after each healthy release)

    .venv/bin/python benchmarks/prune_levels.py [--deploys 20] [--nodes 1] [--keep]

Starts its own lab (name sdprune, port 8795, subnet 10.73.0.0/24; LAB_NAME, LAB_API_PORT and
LAB_SUBNET in the environment choose another), deploys a copy of stack/ in full, then deploys
with --update-only after changing the api's and Django's code each time (new images every
release, RELEASES_KEEP at its default). After each deploy it measures the disk the stack uses on
every droplet: `du -skx /var/lib/docker /opt` inside each lab droplet (images, build cache,
containers, volumes, releases). Prints each deploy's figure, then after the 5th and the last
and their ratio. Asserts nothing; not for the shared default lab.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labrun import LabRun  # noqa: E402

DEFAULT_LAB = {"LAB_NAME": "sdprune", "LAB_API_PORT": "8795", "LAB_SUBNET": "10.73.0.0/24"}
MEASURED = ("/var/lib/docker", "/opt")     # the droplet's Docker data and the release root


def disk_used_kb(lab_name: str) -> int:
    """KiB used under MEASURED, summed over the lab's droplets (du -x: the volume each is on)."""
    droplets = subprocess.run(["docker", "ps", "-q", "--filter", f"label=stackdeploy.lab={lab_name}",
                               "--filter", "label=stackdeploy.lab.kind=droplet"],
                              capture_output=True, text=True, check=True).stdout.split()
    if not droplets:
        raise SystemExit(f"no droplet of lab {lab_name} is running")
    total = 0
    for droplet in droplets:
        out = subprocess.run(["docker", "exec", droplet, "du", "-skx", *MEASURED],
                             capture_output=True, text=True).stdout
        total += sum(int(line.split()[0]) for line in out.splitlines() if line.split() and line.split()[0].isdigit())
    return total


def change_code(stack: Path, n: int) -> None:
    """Changed code in two built services: each release gets new api and Django images."""
    init = stack / "api" / "app" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "1.0.{n}"', init.read_text()))
    settings = stack / "django" / "config" / "settings.py"
    settings.write_text(re.sub(r"\n# prune_levels release \d+\n", "\n", settings.read_text())
                        + f"\n# prune_levels release {n}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=20, help="deploys in all, the first one full (default 20)")
    parser.add_argument("--nodes", type=int, default=1, help="droplets (NODES; more than 1 is a swarm)")
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args()
    if args.deploys < 5:
        parser.error("--deploys must be 5 or more: the figure compares the 5th with the last")
    lab_settings = {k: os.environ.get(k, v) for k, v in DEFAULT_LAB.items()}
    if lab_settings["LAB_NAME"] == "stackdeploy-lab":
        parser.error("LAB_NAME is the shared default lab: give this benchmark a lab of its own")
    lab = LabRun(lab_settings)
    extra = {"NODES": str(args.nodes)}
    used: list[tuple[int, float, int]] = []
    try:
        lab.up()
        for n in range(1, args.deploys + 1):
            change_code(lab.stack, n)
            seconds, _ = lab.inv("deploy", *(() if n == 1 else ("--update-only",)), extra=extra)
            kb = disk_used_kb(lab_settings["LAB_NAME"])
            used.append((n, seconds, kb))
            print(f"deploy {n:2d}: {seconds:6.1f} s, disk used {kb / 1024:9.1f} MiB", flush=True)
        fifth, last = used[4][2], used[-1][2]
        ratio = last / fifth
        print(f"after the 5th: {fifth / 1024:.1f} MiB; after the {args.deploys}th: {last / 1024:.1f} MiB; "
              f"ratio {ratio:.3f} ({'within' if abs(ratio - 1) <= 0.05 else 'NOT within'} 5%)")
        return 0
    finally:
        if not args.keep:
            lab.down()


if __name__ == "__main__":
    raise SystemExit(main())
