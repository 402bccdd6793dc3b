"""Fixtures shared by several test folders."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.remote.sshd import SSHD, make_sshd


def need(condition: bool, what: str) -> None:
    """Skip locally when a tool is missing; in CI (which installs everything) fail instead."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed; CI installs it (scripts/setup.sh)")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 that plays a droplet's SSH server."""
    need(os.path.exists(SSHD) and bool(shutil.which("ssh-keygen")), "openssh-server")
    server = make_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
