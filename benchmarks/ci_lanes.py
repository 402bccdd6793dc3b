"""Where CI's minutes go: seconds per test file and per directory, from the JUnit files each lane
of scripts/test.sh writes (.test-logs/rest.xml, e2e.xml, swarm.xml), to balance the lanes.

    .venv/bin/python benchmarks/ci_lanes.py [.test-logs] [--top 25]

A test's time includes its fixtures' setup, so a shared lab's start counts in its first test.
"""
from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def times(xml: Path) -> dict[str, float]:
    """test file (tests/x/test_y.py) -> seconds, from one JUnit file."""
    out: dict[str, float] = defaultdict(float)
    for case in ET.parse(xml).getroot().iter("testcase"):
        module = (case.get("classname") or "").split(".")
        path = "/".join(m for m in module if not m[:1].isupper()) + ".py"
        out[path] += float(case.get("time") or 0)
    return dict(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path(".test-logs"))
    parser.add_argument("--top", type=int, default=25, help="how many files to list per lane")
    args = parser.parse_args()
    lanes = sorted(args.folder.glob("*.xml"))
    if not lanes:
        print(f"no JUnit files in {args.folder}: run `bash scripts/test.sh` first", file=sys.stderr)
        return 2
    for xml in lanes:
        files = times(xml)
        dirs: dict[str, float] = defaultdict(float)
        for path, seconds in files.items():
            dirs[path.rsplit("/", 1)[0]] += seconds
        print(f"== {xml.stem}: {sum(files.values()) / 60:.1f} min in {len(files)} files")
        for d, seconds in sorted(dirs.items(), key=lambda kv: -kv[1]):
            print(f"   {seconds / 60:6.1f} min  {d}/")
        for path, seconds in sorted(files.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"   {seconds:7.1f} s  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
