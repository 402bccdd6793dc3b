"""Start a lab service container (DNS, Pebble) at a fixed address on the lab network.

A running container is kept only when it is the one this call would start (Pebble's roots
change at every start): same image, address, arguments and mounted files, recorded in a spec
label. Anything else of that name is replaced: a container left by another checkout of the same
lab name, or brought back by the Docker engine after a killed run, serves certificates this
lab's state folder never issued; one started for a state folder that was since removed mounts
deleted files (the spec holds the folder's instance id, lab/state.py). A container that is not
plainly running is replaced too: exited, paused, or restarted by the engine (a crash loop shows
as `restarting`). Service containers are disposable: what they keep lives in the state folder or
a labelled volume. The lab label makes `lab.down` remove it.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from lab import state
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


def describe(info: dict[str, Any] | None) -> dict[str, Any]:
    """A container's state as `inv lab.status` shows it, from `docker inspect`: running,
    restarting, paused, exited (and docker's other statuses: created, dead) or missing, with its
    restart count and last exit code."""
    if not info:
        return {"state": "missing", "restarts": 0, "exit_code": None}
    st = info.get("State") or {}
    if st.get("Restarting"):        # docker says Running too, between two crashes
        now = "restarting"
    elif st.get("Paused"):
        now = "paused"
    elif st.get("Running"):
        now = "running"
    else:
        now = st.get("Status") or "unknown"
    return {"state": now, "restarts": int(info.get("RestartCount") or 0),
            "exit_code": None if now in ("running", "paused", "created") else st.get("ExitCode")}


def summary(d: dict[str, Any]) -> str:
    """`running`, `running (restarted 2 times)`, `restarting (5 restarts, last exit code 1)`,
    `exited (exit code 137)`, `missing`."""
    if d["state"] == "restarting":
        return f"restarting ({d['restarts']} restarts, last exit code {d['exit_code']})"
    if d["exit_code"] is not None:
        return f"{d['state']} (exit code {d['exit_code']})"
    if d["restarts"]:
        return f"{d['state']} (restarted {d['restarts']} times)"
    return d["state"]


def service(cfg: LabConfig, role: str) -> dict[str, Any]:
    """The service container `<lab>-<role>`: its name and describe()."""
    name = container_name(cfg, role)
    return {"container": name, **describe(inspect("container", name))}


def ensure_container(cfg: LabConfig, role: str, image: str, ip: str, run_args: Sequence[str],
                     command: Sequence[str] = (), log: Log = print, content: str = "") -> str:
    """The container `<lab>-<role>` running `image` at `ip`; returns its name.

    `content`: a digest of what the mounted files hold (a certificate, an htpasswd), which the
    service reads at start only; a change replaces the container."""
    name = container_name(cfg, role)
    info = inspect("container", name)
    image_id = (inspect("image", image) or {}).get("Id")
    spec = spec_digest(image_id, cfg.network, ip, list(run_args), list(command), content,
                       state.instance(cfg.state_dir))
    labels = (info or {}).get("Config", {}).get("Labels") or {}
    now = describe(info)
    if now["state"] == "running" and not now["restarts"] and labels.get(SPEC_LABEL) == spec:
        return name
    if info:
        if now["state"] != "running" or now["restarts"]:
            log(f"lab {role}: replacing {name}, which is {summary(now)}")
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
