"""Fixtures shared by several test folders."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

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


TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (`-n 2 --dist loadgroup`, as scripts/test.sh runs it) each test folder
    runs whole on one worker: a folder's files share expensive session fixtures (the e2e lab and
    its deployment, built stack images, lab droplets) and the e2e files build on one another in
    file order. The lab's end-to-end run, mostly waiting on the droplet, overlaps the rest."""
    for item in items:
        folder = Path(str(item.fspath)).resolve().relative_to(TESTS).parts[0]
        item.add_marker(pytest.mark.xdist_group(folder))


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
