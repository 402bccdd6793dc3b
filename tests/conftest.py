"""Fixtures shared by several test folders."""
from __future__ import annotations

import os
import shutil

import pytest

from deploy.redact import REGISTRY
from tests.remote.sshd import SSHD, make_sshd


def need(condition: bool, what: str, missing: str = "is not installed",
         provided_by: str = "CI installs it (scripts/setup.sh)") -> None:
    """Skip locally when something is missing; in CI (which provides everything) fail instead."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} {missing}; {provided_by}")
    pytest.skip(f"{what} {missing}")


@pytest.fixture(autouse=True)
def fresh_secret_registry():
    """Each test starts with the secret registry a new `inv` process has. Every test's Settings
    registers new random secrets; kept, they piled up into the one pattern every redaction runs
    and the tests of tests/flows slowed from about 1 s to about 10 s each by the end."""
    REGISTRY.__init__()
    yield


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 that plays a droplet's SSH server."""
    need(os.path.exists(SSHD) and bool(shutil.which("ssh-keygen")), "openssh-server")
    server = make_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
