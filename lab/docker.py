"""Thin wrapper over the docker CLI: the lab's only way to talk to the host engine.

The CLI (not the HTTP API) keeps us free of new dependencies and makes every action
reproducible by hand: each call is exactly a `docker ...` line an operator could type.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import IO, Any

from lab.errors import LabError

INSTALL_HINT = "run `sudo scripts/install-docker.sh` to install Debian's docker.io and start dockerd"


def docker(*args: str, input: bytes | None = None, stdin: IO[bytes] | None = None,
           check: bool = True, timeout: float | None = 600) -> str:
    """Run `docker args...` and return stdout; a failure raises LabError with docker's own words."""
    if shutil.which("docker") is None:
        raise LabError(f"the docker CLI is not installed: {INSTALL_HINT}")
    try:
        proc = subprocess.run(["docker", *args], input=input, stdin=stdin, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`docker {' '.join(args[:3])}` did not finish in {timeout}s") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise LabError(f"`docker {' '.join(args[:3])}` failed: {err[-1500:]}")
    return proc.stdout.decode(errors="replace")


def engine_problem() -> str | None:
    """None when the CLI and a running engine are present, else what is missing and the fix."""
    if shutil.which("docker") is None:
        return f"the docker CLI is not installed: {INSTALL_HINT}"
    proc = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          capture_output=True, timeout=30)
    if proc.returncode != 0:
        sock = Path("/var/run/docker.sock")
        what = "the Docker engine is not running" if not sock.exists() else \
            "the Docker engine does not answer on /var/run/docker.sock"
        return f"{what}: {INSTALL_HINT}"
    return None


def inspect(kind: str, name: str) -> dict[str, Any] | None:
    """`docker <kind> inspect name` as a dict, or None when it does not exist."""
    proc = subprocess.run(["docker", kind, "inspect", name], capture_output=True, timeout=60)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout or b"[]")
    return data[0] if data else None


def list_labelled(kind: str, *labels: str) -> list[str]:
    """Ids/names of containers, volumes or networks carrying every one of `labels` (key or key=value)."""
    filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
    if kind == "container":
        out = docker("ps", "-aq", "--no-trunc", *filters)
    elif kind == "image":
        out = docker("image", "ls", "-q", "--no-trunc", *filters)
    else:
        out = docker(kind, "ls", "-q", *filters)
    return sorted(set(out.split()))
