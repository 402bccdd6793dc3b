"""Shared helpers for the stack tests: paths, ports, processes, waiting."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from remote import edge_config

from .gotemplate import render

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "stack"
VENV_BIN = REPO / ".venv" / "bin"
SCHEMAS = REPO / ".." / "shared" / "schemas"

# Values the tests render dynamic.yml with (no secrets: throwaway test values).
BASE_ENV = {
    "DOMAIN": "stack.test",
    "RATE_LIMIT_API_RPM": "60",
    "DASHBOARD_ALLOWLIST": "127.0.0.1/32, 10.0.0.0/8",
    # bcrypt htpasswd lines, the only kind the deployer accepts.
    "FLOWER_BASIC_AUTH": "flower:$2y$05$PoEIvFN9sy0hBcNopCSzWeK8nxDY/iYGjJX2ixcMWEnhSgDwFqx/u",
    "ADMIN_BASIC_AUTH": "admin:$2b$05$fxGeP4TT1MjT4G31UrvH.Orhw6CQWhKGe8VwoC.CJKMRb.QJuA5kK",
}


# For tests.conftest.need: where CI gets what the stack tests run.
PROVIDED_BY = "CI installs it: see requirements/stack.txt, scripts/apt/stack.txt"


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not ready after {timeout}s\n{tail}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(cmd: list[str], log: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None, user: str | None = None) -> subprocess.Popen:
    """Start a process in its own session, output to `log`."""
    fh = open(log, "ab")
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                            start_new_session=True, user=user)


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stop the process group we started (only ours: by its own pgid)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def rendered_dynamic(deploy_env: str, **overrides: str) -> dict:
    """What Traefik loads from the folder the deployer fills: dynamic.yml rendered with its env,
    and the basic-auth middlewares of auth.yml (remote/edge_config.py) beside it."""
    env = {**BASE_ENV, "DEPLOY_ENV": deploy_env, **overrides}
    dynamic = yaml.safe_load(render((STACK / "traefik" / "dynamic.yml").read_text(), env))
    auth = yaml.safe_load(render(edge_config.auth_yaml(env), env))
    clash = set(dynamic["http"]["middlewares"]) & set(auth["http"]["middlewares"])
    assert not clash, f"defined in both files (Traefik refuses a middleware defined twice): {clash}"
    dynamic["http"]["middlewares"].update(auth["http"]["middlewares"])
    return dynamic


def compose() -> dict:
    return load_yaml(STACK / "compose.yml")
