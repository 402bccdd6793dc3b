"""Start a lab service container (DNS, Pebble) at a fixed address on the lab network.

A running container is kept only when it is the one this call would start (Pebble's roots
change at every start): same image, address, arguments and mounted files, recorded in a spec
label. Anything else of that name is replaced: a container left by another checkout of the same
lab name, or brought back by the Docker engine after a killed run, serves certificates this
lab's state folder never issued. The lab label makes `lab.down` remove it.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Sequence

from lab.config import LabConfig
from lab.docker import docker, inspect
from lab.errors import LabError

Log = Callable[[str], None]
KIND_LABEL = "stackdeploy.lab.kind"
SPEC_LABEL = "stackdeploy.lab.spec"


def container_name(cfg: LabConfig, role: str) -> str:
    return f"{cfg.name}-{role}"


def spec_digest(*parts: object) -> str:
    """A short digest of everything that makes a service container what it is."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def ensure_container(cfg: LabConfig, role: str, image: str, ip: str, run_args: Sequence[str],
                     command: Sequence[str] = (), log: Log = print, content: str = "") -> str:
    """The container `<lab>-<role>` running `image` at `ip`; returns its name.

    `content`: a digest of what the mounted files hold (a certificate, an htpasswd), which the
    service reads at start only; a change replaces the container."""
    name = container_name(cfg, role)
    info = inspect("container", name)
    image_id = (inspect("image", image) or {}).get("Id")
    spec = spec_digest(image_id, cfg.network, ip, list(run_args), list(command), content)
    labels = (info or {}).get("Config", {}).get("Labels") or {}
    if info and info.get("State", {}).get("Running") and labels.get(SPEC_LABEL) == spec:
        return name
    if info:
        docker("rm", "-f", "-v", name)
    docker("run", "-d", "--name", name, "--hostname", role, "--network", cfg.network, "--ip", ip,
           "--label", cfg.label, "--label", f"{KIND_LABEL}={role}", "--label", f"{SPEC_LABEL}={spec}",
           "--restart", "unless-stopped", *run_args, image, *command)
    log(f"lab {role}: {name} at {ip}")
    return name


def wait_until(ready: Callable[[], bool], name: str, what: str, timeout: float = 30.0) -> None:
    """Poll `ready` until true; on timeout the container's log tail explains why."""
    deadline = time.monotonic() + timeout
    while not ready():
        info = inspect("container", name) or {}
        # --restart keeps a crashing service "running" between attempts: a restart is an exit.
        running = info.get("State", {}).get("Running") and not info.get("RestartCount")
        if not running or time.monotonic() > deadline:
            # Both streams: Pebble logs to stderr, knotd to stdout.
            proc = subprocess.run(["docker", "logs", "--tail", "20", name], capture_output=True,
                                  text=True, timeout=30)
            logs = proc.stdout + proc.stderr
            why = f"did not become ready in {timeout:.0f}s" if running else "exited before it was ready"
            raise LabError(f"lab {what} ({name}) {why}; its log:\n{logs[-1500:]}")
        time.sleep(0.2)
