"""Deploy lock over a real sshd: contention, release on error, status/force release. The block
is the one deploys use (deploy.steps.locked), so these tests cover the production path."""
from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from deploy import steps
from deploy.redact import SecretRegistry
from deploy.report.run import Run
from remote import lock
from remote.connection import connect
from remote.errors import RemoteError
from remote.layout import ReleaseLayout
from remote.lock import LockHeld, LockHolder
from remote.host import SshExecutor, Host
from tests.remote.conftest import target_over


def new_run(tmp_path, command: str) -> Run:
    run = Run(tmp_path / "runs", "deploy", "update", command.split(),
              console=Console(file=io.StringIO()), registry=SecretRegistry())
    return run


def test_second_deploy_fails_fast_naming_the_holder(host, target, base, tmp_path):
    other = connect(target)  # a second operator: its own connection
    other_host = target_over(other, base)
    first_run, second_run = new_run(tmp_path, "inv deploy --update-only"), new_run(tmp_path, "inv deploy")
    try:
        with steps.locked(first_run, host, "20250101T000000Z-abc", wait=0):
            started = time.monotonic()
            with pytest.raises(LockHeld) as err:
                with steps.locked(second_run, other_host, None, wait=0):
                    pytest.fail("second deploy entered the locked block")
            assert time.monotonic() - started < 5
            assert err.value.exit_code == 5
            msg = str(err.value)
            assert "inv deploy --update-only" in msg and "20250101T000000Z-abc" in msg
            assert "@" in err.value.holder.who and "inv lock.release" in err.value.hint
            held = lock.status(other_host)
            assert held is not None and held.release == "20250101T000000Z-abc"
        assert lock.status(other_host) is None
        with steps.locked(second_run, other_host, None, wait=0):   # free again
            assert lock.status(host).command == "inv deploy"
    finally:
        other.close()


def test_lock_is_released_when_the_block_raises(host, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with steps.locked(new_run(tmp_path, "inv deploy"), host, None, wait=0):
            assert lock.status(host) is not None
            raise RuntimeError("boom")
    assert lock.status(host) is None


def test_bounded_wait_gets_the_lock_once_freed(host):
    lock.acquire(host, LockHolder.here(None, "inv deploy"))
    calls = []

    def sleep_then_free(seconds):  # the holder finishes while we wait
        calls.append(seconds)
        lock.release(host)

    got = lock.acquire(host, LockHolder.here("r2", "inv deploy"), wait=30, poll=0.1,
                       sleep=sleep_then_free)
    assert got.release == "r2" and calls == [0.1]
    assert lock.status(host).release == "r2"


def test_force_release_and_a_lock_without_details(host, conn, base):
    lock.acquire(host, LockHolder.here(None, "inv deploy"))
    lock.release(host)
    assert lock.status(host) is None
    conn.run(f"mkdir -p {base}/lock")  # a holder that died before writing its details
    with pytest.raises(LockHeld, match="held by unknown"):
        lock.acquire(host, LockHolder.here(None, "inv deploy"))
    lock.release(host)
    lock.release(host)  # releasing a free lock is fine
    assert lock.status(host) is None


def test_a_force_released_deploy_does_not_remove_the_next_holders_lock(host, tmp_path):
    run = new_run(tmp_path, "inv deploy")
    with steps.locked(run, host, "r1", wait=0):
        lock.release(host)                      # an operator runs `inv lock.release`
        second = lock.acquire(host, LockHolder.here("r2", "inv deploy --update-only"))
    # the first deploy's block ended; the second deploy's lock must still be there
    assert lock.status(host) == second
    assert any("no longer ours" in w for w in run.warnings)
    assert lock.release_if_ours(host, second) is True
    assert lock.status(host) is None


class _DiesWhileWriting(SshExecutor):
    """An SSH session that drops while the holder's details are being written."""

    def put(self, path: str, data: bytes, mode: int | None = None) -> None:
        raise RemoteError(f"writing {path} failed: connection dropped", "reconnect")


def test_a_fault_while_taking_the_lock_leaves_no_anonymous_lock(host, conn, base):
    dying = Host(name="sshd", host=conn.host, layout=ReleaseLayout(base),
                   connector=lambda quick: _DiesWhileWriting(conn)).open()
    with pytest.raises(RemoteError, match="connection dropped"):
        lock.acquire(dying, LockHolder.here("r1", "inv deploy"))
    assert lock.status(host) is None                 # no lock without its holder
    assert lock.acquire(host, LockHolder.here("r2", "inv deploy")).release == "r2"
    assert lock.status(host).release == "r2"
