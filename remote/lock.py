"""Deploy lock on the droplet (Kamal style): an atomic ``mkdir <base>/lock``.

The holder's details live inside the lock folder as JSON so a second operator
sees who is deploying, since when and what. The lock is released when the
``deploy_lock`` block ends, also on error; ``inv lock.release`` forces it.
"""
from __future__ import annotations

import getpass
import json
import os
import posixpath
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

import fabric

from remote import commands as cmd
from remote.errors import RemoteError


@dataclass(frozen=True)
class LockHolder:
    who: str            # local user@hostname
    when: str           # UTC ISO timestamp
    release: str | None
    command: str        # already redacted by the caller
    pid: int | None = None

    @classmethod
    def here(cls, release: str | None, command: str) -> "LockHolder":
        return cls(who=f"{getpass.getuser()}@{socket.gethostname()}",
                   when=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   release=release, command=command, pid=os.getpid())

    def describe(self) -> str:
        what = f" deploying {self.release}" if self.release else ""
        return f"{self.who} since {self.when}{what} ({self.command})"


class LockError(RemoteError):
    """The lock could not be read, taken or released."""


class LockHeld(LockError):
    """Another deploy holds the lock; ``holder`` is None while its details are being written."""

    def __init__(self, host: str, base: str, holder: LockHolder | None) -> None:
        who = holder.describe() if holder else "an unknown holder (no details recorded)"
        super().__init__(
            f"deploy lock {cmd.lock_dir(base)} on {host} is held by {who}",
            "wait for that deploy to finish; if it died, release the lock with "
            "`inv lock.release`")
        self.holder = holder


def _run(conn: fabric.Connection, command: str, what: str) -> str:
    res = conn.run(command, hide=True, warn=True, in_stream=False)
    if res.exited != 0:
        err = (res.stderr or res.stdout).strip().splitlines()
        raise LockError(f"{what} failed on {conn.host}: {err[-1] if err else f'exit {res.exited}'}",
                        "check the deploy user can write the remote base folder")
    return res.stdout


def _parse_holder(text: str) -> LockHolder | None:
    try:
        data = json.loads(text)
        return LockHolder(**{k: data.get(k) for k in ("who", "when", "release", "command", "pid")})
    except (json.JSONDecodeError, TypeError, AttributeError):
        return None


def status(conn: fabric.Connection, base: str) -> LockHolder | None:
    """The current holder, or None when the lock is free.

    A lock that exists but has no readable details is reported as a holder with
    who="unknown" so it is never mistaken for a free lock.
    """
    out = _run(conn, cmd.lock_status(base), "reading the deploy lock")
    first, _, rest = out.partition("\n")
    if first.strip() == "free":
        return None
    return _parse_holder(rest) or LockHolder(who="unknown", when="unknown", release=None,
                                             command="(no holder details)")


def acquire(conn: fabric.Connection, base: str, holder: LockHolder, wait: float = 0,
            poll: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> LockHolder:
    """Take the lock or raise LockHeld after ``wait`` seconds (default: fail at once)."""
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        out = _run(conn, cmd.lock_acquire(base), "taking the deploy lock").strip()
        if out == "acquired":
            data = json.dumps(asdict(holder), indent=1).encode()
            with conn.sftp().open(posixpath.join(cmd.lock_dir(base), cmd.LOCK_HOLDER), "wb") as fh:
                fh.write(data)
            return holder
        if time.monotonic() >= deadline:
            raise LockHeld(conn.host, base, status(conn, base))
        sleep(min(poll, max(0.0, deadline - time.monotonic())))


def release(conn: fabric.Connection, base: str) -> None:
    """Remove the lock whoever holds it (``inv lock.release``)."""
    _run(conn, cmd.lock_release(base), "releasing the deploy lock")


def release_if_ours(conn: fabric.Connection, base: str, holder: LockHolder) -> bool:
    """Release the lock only if ``holder`` still has it. After a force release another deploy may
    hold it now: removing theirs would let a third deploy run beside it. False when not ours."""
    if status(conn, base) != holder:
        return False
    release(conn, base)
    return True


@contextmanager
def deploy_lock(conn: fabric.Connection, base: str, release_id: str | None, command: str,
                wait: float = 0) -> Iterator[LockHolder]:
    """Hold the lock for the block; released on success, error and Ctrl-C alike."""
    holder = acquire(conn, base, LockHolder.here(release_id, command), wait=wait)
    try:
        yield holder
    finally:
        release_if_ours(conn, base, holder)
