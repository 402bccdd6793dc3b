from __future__ import annotations

from pathlib import Path

import fabric
import pytest

from remote.connection import SshTarget, connect
from remote.layout import ReleaseLayout
from remote.target import SshExecutor, Target
from tests.remote.sshd import Sshd, pin


@pytest.fixture
def target(sshd: Sshd, tmp_path: Path) -> SshTarget:
    """A target with a fresh known_hosts per test, the sshd's host key pinned in it (out of band,
    as the deployer pins a droplet it creates)."""
    return SshTarget(host="127.0.0.1", user=sshd.user, key_path=sshd.user_key, port=sshd.port,
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
def conn(target: SshTarget, commands_run):
    c = connect(target)
    yield c
    c.close()


@pytest.fixture
def base(tmp_path: Path) -> str:
    """The droplet's deploy base (/opt/<project> on a real droplet)."""
    d = tmp_path / "droplet" / "opt" / "sdtest"
    return str(d)


def target_over(conn: fabric.Connection, base: str) -> Target:
    """A deploy Target whose executor is an already open connection to the test sshd."""
    return Target(name="sshd", host=conn.host, layout=ReleaseLayout(base),
                  connector=lambda quick: SshExecutor(conn)).open()


@pytest.fixture
def host(conn, base) -> Target:
    """The droplet as the deploy code sees it: the test sshd, with the release layout under ``base``."""
    return target_over(conn, base)
