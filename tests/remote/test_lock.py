"""Deploy lock over a real sshd: contention, release on error, status/force release."""
from __future__ import annotations

import time

import pytest

from remote import lock
from remote.connection import connect
from remote.lock import LockHeld, LockHolder


def test_second_deploy_fails_fast_naming_the_holder(conn, target, base):
    other = connect(target)  # a second operator: its own connection
    try:
        with lock.deploy_lock(conn, base, "20250101T000000Z-abc", "inv deploy --update-only"):
            started = time.monotonic()
            with pytest.raises(LockHeld) as err:
                with lock.deploy_lock(other, base, None, "inv deploy"):
                    pytest.fail("second deploy entered the locked block")
            assert time.monotonic() - started < 5
            msg = str(err.value)
            assert "inv deploy --update-only" in msg and "20250101T000000Z-abc" in msg
            assert "@" in err.value.holder.who and "inv lock.release" in err.value.hint
            held = lock.status(other, base)
            assert held is not None and held.release == "20250101T000000Z-abc"
        assert lock.status(other, base) is None
        with lock.deploy_lock(other, base, None, "inv deploy"):   # free again
            assert lock.status(conn, base).command == "inv deploy"
    finally:
        other.close()


def test_lock_is_released_when_the_block_raises(conn, base):
    with pytest.raises(RuntimeError, match="boom"):
        with lock.deploy_lock(conn, base, None, "inv deploy"):
            assert lock.status(conn, base) is not None
            raise RuntimeError("boom")
    assert lock.status(conn, base) is None


def test_bounded_wait_gets_the_lock_once_freed(conn, base):
    lock.acquire(conn, base, LockHolder.here(None, "inv deploy"))
    calls = []

    def sleep_then_free(seconds):  # the holder finishes while we wait
        calls.append(seconds)
        lock.release(conn, base)

    got = lock.acquire(conn, base, LockHolder.here("r2", "inv deploy"), wait=30, poll=0.1,
                       sleep=sleep_then_free)
    assert got.release == "r2" and calls == [0.1]
    assert lock.status(conn, base).release == "r2"


def test_force_release_and_a_lock_without_details(conn, base):
    lock.acquire(conn, base, LockHolder.here(None, "inv deploy"))
    lock.release(conn, base)
    assert lock.status(conn, base) is None
    conn.run(f"mkdir -p {base}/lock")  # a holder that died before writing its details
    with pytest.raises(LockHeld, match="held by unknown"):
        lock.acquire(conn, base, LockHolder.here(None, "inv deploy"))
    lock.release(conn, base)
    lock.release(conn, base)  # releasing a free lock is fine
    assert lock.status(conn, base) is None


def test_a_force_released_deploy_does_not_remove_the_next_holders_lock(conn, base):
    with lock.deploy_lock(conn, base, "r1", "inv deploy") as first:
        lock.release(conn, base)                      # an operator runs `inv lock.release`
        second = lock.acquire(conn, base, LockHolder.here("r2", "inv deploy --update-only"))
        assert lock.release_if_ours(conn, base, first) is False
    # the first deploy's block ended; the second deploy's lock must still be there
    assert lock.status(conn, base) == second
    assert lock.release_if_ours(conn, base, second) is True
    assert lock.status(conn, base) is None
