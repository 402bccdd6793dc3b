from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from deploy.checks import ChecksConfig, PublicSite
from tests.checks.certs import STAGING, make_cert
from tests.checks.servers import Behaviour, FakeEdge


def require(condition: bool, why: str) -> None:
    """Skip on a developer machine lacking something; in CI (everything installed) fail instead."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI is set, so this must work)")
        pytest.skip(why)


# Small numbers keep the suite quick; the behaviour is the same at production sizes.
FAST = dict(samples=3, timeout=5, rate_limit_requests=10)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Callable[..., FakeEdge]]:
    """edge(issuer=STAGING, domain="localhost", address="127.0.0.1", **behaviour) -> a running FakeEdge."""
    started: list[FakeEdge] = []

    def start(issuer=STAGING, domain: str = "localhost", address: str = "127.0.0.1", **behaviour) -> FakeEdge:
        server = FakeEdge(make_cert(tmp_path, issuer, domain), Behaviour(**behaviour), address).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


def target_for(server: FakeEdge, domain: str = "localhost", env: str = "staging", ip: str = "127.0.0.1") -> PublicSite:
    return PublicSite(ip=ip, domain=domain, deploy_env=env, https_port=server.https_port, http_port=server.http_port)


def fast_config(**overrides) -> ChecksConfig:
    return ChecksConfig(**{**FAST, **overrides})
