"""Deploy lock on the droplet (Kamal style): an atomic ``mkdir <base>/lock``.

The holder's details live inside the lock folder as JSON so a second operator sees who is
deploying, since when and what. The deploy flow releases the lock when it ends, also on error,
and only while it is still its own (``release_if_ours``); ``inv lock.release`` forces it.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable

from deploy.errors import EXIT_LOCKED
from remote import commands as cmd
from remote.errors import RemoteError
from remote.target import Target

LOCK_HINT = "check the deploy user can write the remote base folder"


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

    exit_code = EXIT_LOCKED

    def __init__(self, target: Target, holder: LockHolder | None) -> None:
        who = holder.describe() if holder else "an unknown holder (no details recorded)"
        super().__init__(
            f"deploy lock {target.layout.lock_dir} on {target.host} is held by {who}",
            "wait for that deploy to finish; if it died, release the lock with `inv lock.release`")
        self.holder = holder


def _parse_holder(text: str) -> LockHolder | None:
    try:
        data = json.loads(text)
        return LockHolder(**{k: data.get(k) for k in ("who", "when", "release", "command", "pid")})
    except (json.JSONDecodeError, TypeError, AttributeError):
        return None


def status(target: Target) -> LockHolder | None:
    """The current holder, or None when the lock is free.

    A lock that exists but has no readable details is reported as a holder with
    who="unknown" so it is never mistaken for a free lock.
    """
    out = target.run(cmd.lock_status(target.layout), "reading the deploy lock", hint=LOCK_HINT).stdout
    first, _, rest = out.partition("\n")
    if first.strip() == "free":
        return None
    return _parse_holder(rest) or LockHolder(who="unknown", when="unknown", release=None,
                                             command="(no holder details)")


def acquire(target: Target, holder: LockHolder, wait: float = 0, poll: float = 1.0,
            sleep: Callable[[float], None] = time.sleep) -> LockHolder:
    """Take the lock or raise LockHeld after ``wait`` seconds (default: fail at once)."""
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        out = target.run(cmd.lock_acquire(target.layout), "taking the deploy lock", hint=LOCK_HINT).stdout
        if out.strip() == "acquired":
            target.put(target.layout.lock_holder, json.dumps(asdict(holder), indent=1).encode())
            return holder
        if time.monotonic() >= deadline:
            raise LockHeld(target, status(target))
        sleep(min(poll, max(0.0, deadline - time.monotonic())))


def release(target: Target) -> None:
    """Remove the lock whoever holds it (``inv lock.release``)."""
    target.run(cmd.lock_release(target.layout), "releasing the deploy lock", hint=LOCK_HINT)


def release_if_ours(target: Target, holder: LockHolder) -> bool:
    """Release the lock only if ``holder`` still has it. After a force release another deploy may
    hold it now: removing theirs would let a third deploy run beside it. False when not ours."""
    if status(target) != holder:
        return False
    release(target)
    return True
