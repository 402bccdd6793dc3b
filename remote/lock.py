"""Deploy lock on the droplet (Kamal style): the folder ``<base>/lock`` with ``holder.json``.

The lock is prepared in a folder of its own, its holder written there over SFTP (it holds the
redacted command line: never on a command line itself), and then renamed into place with one
``mv -T``: the lock never exists without its holder, and a fault on the way leaves only a staging
folder (removed by a later attempt), never an anonymous lock. The deploy flow releases the lock
when it ends, also on error, and only while it is still its own (``release_if_ours``);
``inv lock.release --if-stale`` releases a lock whose holder is gone, ``inv lock.release`` any.

Staleness is judged only when an operator asks (nothing breaks a lock by itself): a holder on
this machine is stale when its process is gone; one elsewhere when the lock is older than
LOCK_TTL, counted by the droplet's own clock (the lock folder's age), so clocks of operators'
machines do not matter. There is no heartbeat: LOCK_TTL must exceed the longest deploy.
"""
from __future__ import annotations

import getpass
import json
import os
import posixpath
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable

from core.errors import EXIT_LOCKED
from remote import commands as cmd
from remote.errors import RemoteError
from remote.host import Host

LOCK_HINT = "check the deploy user can write the remote base folder"
IF_STALE = ("`inv lock.release --if-stale` releases it once its process is gone (a holder on this machine) "
            "or it is older than LOCK_TTL")


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


@dataclass(frozen=True)
class LockState:
    """A held lock: its holder and how long ago it was taken (droplet clock; None if unknown)."""

    holder: LockHolder
    age: float | None

    def describe(self) -> str:
        taken = f", taken {duration(self.age)} ago" if self.age is not None else ""
        return self.holder.describe() + taken


class LockError(RemoteError):
    """The lock could not be read, taken or released."""


class LockHeld(LockError):
    """Another deploy holds the lock."""

    exit_code = EXIT_LOCKED

    def __init__(self, target: Host, state: LockState, stale: str | None = None, *,
                 problem: str = "", hint: str = "") -> None:
        stale_note = f"; it looks stale: {stale}" if stale else ""
        super().__init__(
            f"deploy lock {target.layout.lock_dir} on {target.host} is held by {state.describe()}"
            f"{problem}{stale_note}",
            hint or ("release it with `inv lock.release --if-stale`, then deploy again" if stale else
                     f"wait for that deploy to finish (LOCK_WAIT waits for it); if it died, {IF_STALE}"))
        self.holder = state.holder


def duration(seconds: float) -> str:
    """'45 s', '12 min', '5 h 3 min'."""
    s = int(max(0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _parse_holder(text: str) -> LockHolder | None:
    try:
        data = json.loads(text)
        return LockHolder(**{k: data.get(k) for k in ("who", "when", "release", "command", "pid")})
    except (json.JSONDecodeError, TypeError, AttributeError):
        return None


def read(target: Host) -> LockState | None:
    """The held lock, or None when it is free.

    A lock that exists but has no readable details (left by an older version) is reported with
    who="unknown" so it is never mistaken for a free lock.
    """
    out = target.run(cmd.lock_status(target.layout), "reading the deploy lock", hint=LOCK_HINT).stdout
    first, _, rest = out.partition("\n")
    word, _, age = first.strip().partition(" ")
    if word == "free":
        return None
    holder = _parse_holder(rest) or LockHolder(who="unknown", when="unknown", release=None,
                                               command="(no holder details)")
    return LockState(holder, float(age) if age.lstrip("-").isdigit() else None)


def status(target: Host) -> LockHolder | None:
    """The current holder, or None when the lock is free."""
    state = read(target)
    return state.holder if state else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(state: LockState, ttl: float, hostname: str | None = None) -> str | None:
    """Why the holder is surely gone, or None while it may still be deploying."""
    holder = state.holder
    here = hostname or socket.gethostname()
    if holder.pid and holder.who.rpartition("@")[2] == here:
        if _process_alive(int(holder.pid)):
            return None  # its process runs: never stale, however long it takes
        return f"its process {holder.pid} on this machine ({here}) is gone"
    if state.age is not None and state.age > ttl:
        return f"it was taken {duration(state.age)} ago, longer than LOCK_TTL={ttl:g} s"
    return None


def acquire(target: Host, holder: LockHolder, wait: float = 0, poll: float = 1.0,
            sleep: Callable[[float], None] = time.sleep) -> LockHolder:
    """Take the lock or raise LockHeld after ``wait`` seconds (default: fail at once)."""
    layout = target.layout
    staging = layout.lock_staging(secrets.token_hex(6))
    deadline = time.monotonic() + max(0.0, wait)
    taken = False
    target.run(cmd.lock_prepare(layout, staging), "preparing the deploy lock", hint=LOCK_HINT)
    try:
        target.put(posixpath.join(staging, posixpath.basename(layout.lock_holder)),
                   json.dumps(asdict(holder), indent=1).encode())
        while True:
            out = target.run(cmd.lock_acquire(layout, staging), "taking the deploy lock", hint=LOCK_HINT).stdout
            if out.strip() == "acquired":
                taken = True
                return holder
            state = read(target)
            if state is not None and time.monotonic() >= deadline:
                # Only a holder of this machine is judged here: its process tells for sure.
                raise LockHeld(target, state, stale_reason(state, ttl=float("inf")))
            sleep(min(poll, max(0.0, deadline - time.monotonic())))
    finally:
        if not taken:  # best effort: a later attempt removes what a dead connection leaves
            try:
                target.run(cmd.remove_tree(staging), check=False)
            except Exception:  # noqa: BLE001 - the error that got us here is the one to report
                pass


def release(target: Host) -> None:
    """Remove the lock whoever holds it (``inv lock.release``)."""
    target.run(cmd.lock_release(target.layout, target.layout.lock_staging(secrets.token_hex(6))),
               "releasing the deploy lock", hint=LOCK_HINT)


def release_if_ours(target: Host, holder: LockHolder) -> bool:
    """Release the lock only if ``holder`` still has it. After a force release another deploy may
    hold it now: removing theirs would let a third deploy run beside it. False when not ours."""
    if status(target) != holder:
        return False
    release(target)
    return True


def release_if_stale(target: Host, ttl: float) -> tuple[LockState, str] | None:
    """Release the lock only if its holder is gone (``inv lock.release --if-stale``); returns what
    was released and why (None: it was free). A live holder is refused with LockHeld, naming it."""
    state = read(target)
    if state is None:
        return None
    reason = stale_reason(state, ttl)
    if reason is None:
        raise LockHeld(target, state, problem=" and is not stale (its holder may still be deploying)",
                       hint=f"wait for that deploy to finish; {IF_STALE} (LOCK_TTL={ttl:g} s); "
                            "`inv lock.release` without --if-stale forces it")
    if not release_if_ours(target, state.holder):
        now = read(target)
        if now is not None:  # another deploy took it since it was read: theirs now
            raise LockHeld(target, now, problem=" (taken since the stale lock was read)",
                           hint="run `inv lock.status` and decide again")
    return state, reason
