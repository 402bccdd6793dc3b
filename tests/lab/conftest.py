"""Lab fixtures: a real Docker engine, real droplet containers, unique names per test run."""
from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from lab import config as labconfig
from lab import control, state
from lab.docker import engine_problem
from lab.ports import free_port

# Tests only load what they use into droplets: a full preload is `inv lab.up`'s business.
TEST_PRELOAD = ("redis:7-bookworm",)


def require_docker() -> None:
    """Skip only outside CI; in CI a missing engine is a failure with the fix in the message."""
    problem = engine_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)


def free_subnet() -> str:
    """A /24 in 10.10-10.69 that no Docker network or host route uses yet, nor its VPC sibling
    (10.<+100>: see LabConfig.vpc). The named labs (e2e, benchmarks) live at 10.75-10.81 and
    their VPCs at 10.175-10.181, apart from these."""
    used = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    nets = [ipaddress.ip_network(w, strict=False) for w in used.split() if "/" in w]
    for second in [*range(10 + os.getpid() % 60, 70), *range(10, 70)]:
        cand = ipaddress.ip_network(f"10.{second}.0.0/24")
        vpc = ipaddress.ip_network(f"10.{second + 100}.0.0/24")
        if not any(cand.overlaps(n) or vpc.overlaps(n) for n in nets):
            return str(cand)
    raise RuntimeError("no free 10.x.0.0/24 for the test lab")


@pytest.fixture(scope="session")
def images():
    """Droplet image + every stand-in, built once (cached across runs by recipe digest)."""
    require_docker()
    cfg = labconfig.LabConfig()
    control.build_images(cfg, log=lambda m: print(m, flush=True))
    return cfg


def make_cfg(tmp_path: Path, **kw) -> labconfig.LabConfig:
    name = f"labtest-{uuid.uuid4().hex[:8]}"
    return labconfig.LabConfig(name=name, subnet=free_subnet(), api_port=free_port(),
                               state_dir=tmp_path / ".lab", preload=TEST_PRELOAD, **kw)


@pytest.fixture
def lab_cfg(tmp_path, images):
    cfg = make_cfg(tmp_path)
    yield cfg
    control.down(cfg, log=lambda m: None)


@pytest.fixture
def keypair(tmp_path) -> Path:
    return state.ensure_keypair(tmp_path / "keys")


def ssh(ip: str, key: Path, user: str = "deploy"):
    from fabric import Config, Connection
    # in_stream=False: commands never read the test runner's stdin
    return Connection(ip, user=user, connect_timeout=10,
                      config=Config(overrides={"run": {"in_stream": False}}),
                      connect_kwargs={"key_filename": str(key), "look_for_keys": False,
                                      "allow_agent": False})


def reachable(ip: str, port: int, timeout: float = 3.0) -> bool:
    """A TCP connection from the host (source: the lab network's gateway) succeeds."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False
