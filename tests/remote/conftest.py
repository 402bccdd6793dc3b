from __future__ import annotations

from pathlib import Path

import fabric
import pytest

from remote.connection import SshEndpoint, connect
from remote.layout import ReleaseLayout
from remote.host import SshExecutor, Host
from tests.remote.sshd import Sshd, pin


@pytest.fixture
def target(sshd: Sshd, tmp_path: Path) -> SshEndpoint:
    """A target with a fresh known_hosts per test, the sshd's host key pinned in it (out of band,
    as the deployer pins a droplet it creates)."""
    return SshEndpoint(host="127.0.0.1", user=sshd.user, key_path=sshd.user_key, port=sshd.port,
                     known_hosts_path=pin(sshd, tmp_path / "state" / "known_hosts"),
                     connect_timeout=5, retries=2, backoff=0.1)


@pytest.fixture
def commands_run(monkeypatch) -> list[str]:
    """Every command line sent over Fabric during the test."""
    seen: list[str] = []
    original = fabric.Connection.run

    def recording(self, command, **kwargs):
        seen.append(command)
        return original(self, command, **kwargs)

    monkeypatch.setattr(fabric.Connection, "run", recording)
    return seen


@pytest.fixture
def conn(target: SshEndpoint, commands_run):
    c = connect(target)
    yield c
    c.close()


@pytest.fixture
def base(tmp_path: Path) -> str:
    """The droplet's deploy base (/opt/<project> on a real droplet)."""
    d = tmp_path / "droplet" / "opt" / "sdtest"
    return str(d)


def target_over(conn: fabric.Connection, base: str) -> Host:
    """A deploy Host whose executor is an already open connection to the test sshd."""
    return Host(name="sshd", host=conn.host, layout=ReleaseLayout(base),
                  connector=lambda quick: SshExecutor(conn)).open()


@pytest.fixture
def host(conn, base) -> Host:
    """The droplet as the deploy code sees it: the test sshd, with the release layout under ``base``."""
    return target_over(conn, base)
