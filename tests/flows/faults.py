"""Fault injection for the orchestration world, and the one check of a clean ending every fault of
the matrix (tests/flows/test_fault_matrix.py) must pass: non-zero exit with its code, a message
that names the fix, a well-formed artifact set, the lock released or reported, no secret in the
run folder or the message, and nothing lost on the droplet."""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import paramiko
import pytest

from deploy.report.run import Run
from tests.flows.conftest import Outcome, World, strong_stack_secrets

INTERRUPTS = {"ctrl-c": 130, "sigterm": 143}     # core/errors.py: EXIT_INTERRUPTED, EXIT_TERMINATED


class RunningSteps(list):
    """The names of the steps running now, in the order they began (Run.step, observed);
    ``innermost()`` is the calling thread's own innermost step (a step run beside another, as
    verify's checks are, has its own thread), else the one begun last."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.local()

    def innermost(self) -> str | None:
        mine = self._thread.__dict__.get("steps")
        return mine[-1] if mine else (self[-1] if self else None)


def track_steps(monkeypatch: pytest.MonkeyPatch) -> RunningSteps:
    running = RunningSteps()
    original = Run.step

    @contextmanager
    def step(self: Run, name: str, since: float | None = None) -> Iterator[Any]:
        with original(self, name, since) as handle:
            mine = running._thread.__dict__.setdefault("steps", [])
            running.append(name)
            mine.append(name)
            try:
                yield handle
            finally:
                running.remove(name)
                mine.pop()
    adopt_original = Run.in_this_step

    def in_this_step(self: Run) -> Any:
        # a step's worker threads (collect's) are in it, as Run counts their commands
        steps, adopt = list(running._thread.__dict__.get("steps") or []), adopt_original(self)

        def both() -> None:
            adopt()
            running._thread.steps = list(steps)
        return both
    monkeypatch.setattr(Run, "step", step)
    monkeypatch.setattr(Run, "in_this_step", in_this_step)
    return running


@dataclass
class Trap:
    """``action`` at the first call to an edge (cloud API, SSH connect, command, upload, checks)
    made while step ``step`` runs (and naming ``match``): "ctrl-c", "sigterm", "drop" (the SSH connection dies, and
    every later command or upload on it fails as paramiko's do) "blip" (it dies under that one
    call; the next command reconnects, as Fabric does), "stale" (it dies, and the connection still
    looks open until a new one is made: every call on it fails as paramiko's do, a reconnect works)
    or "reboot" (it dies, and reconnecting finds nothing listening)."""

    step: str
    action: str
    running: RunningSteps
    match: str = ""                 # only at a call whose detail (command, path) contains this
    fired_at: str | None = None
    dropped: bool = field(default=False, init=False)

    def __call__(self, edge: str, detail: str = "") -> None:
        if self.dropped and self.action == "stale" and edge == "connect":
            self.dropped = False          # a fresh connection works
            return
        if self.dropped and edge in ("run", "put"):
            if self.action == "reboot":   # the reconnect finds nothing listening on port 22
                raise paramiko.ssh_exception.NoValidConnectionsError({("203.0.113.10", 22): ConnectionRefusedError()})
            raise paramiko.SSHException("SSH session not active")
        if self.fired_at is not None or self.running.innermost() != self.step or self.match not in detail:
            return
        self.fired_at = f"{edge} {detail}".strip()
        if self.action in ("drop", "blip", "stale", "reboot"):
            self.dropped = self.action != "blip"
            raise paramiko.SSHException("SSH session not active")
        if self.action == "ctrl-c":
            raise KeyboardInterrupt
        # SIGTERM as `kill` sends it: the Run's handler must turn it into a clean end.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None), \
            "no SIGTERM handler while a run is in progress"
        os.kill(os.getpid(), signal.SIGTERM)
        if threading.current_thread() is not threading.main_thread():
            return      # the handler interrupts the main thread; a step run beside it goes on
        for _ in range(200):
            time.sleep(0.01)    # the handler runs here, between two bytecodes of this thread
        raise AssertionError("SIGTERM did not end the run")

    def install(self, world: World) -> "Trap":
        world.fault = self
        cloud = world.cloud
        for name in ("check_token", "provision", "find_cluster"):
            setattr(cloud, name, self._before(f"cloud {name}", getattr(cloud, name)))
        world.checks = self._before("checks", world.checks)  # type: ignore[assignment]
        return self

    def _before(self, edge: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self(edge)
            return call(*args, **kwargs)
        return wrapped


def secrets_of(world: World) -> list[str]:
    """Every secret value of the world: the stack's, the DigitalOcean token, the private part of
    each SSH host key kept for a droplet (bcrypt entries: the hash part too)."""
    env = dict(line.split("=", 1) for line in world.env_file.read_text().splitlines() if "=" in line)
    values = [env[k].strip("'") for k in [*strong_stack_secrets(), "DIGITALOCEAN_TOKEN"] if k in env]
    values += [v.split(":", 1)[1] for v in values if v.startswith("admin:")]
    for key in (world.tmp / "host_keys").glob("*_ed25519"):
        values += [line for line in key.read_text().splitlines()[1:-1] if line.strip()]
    return values


def assert_clean_ending(world: World, out: Outcome, *, code: int, fix: list[str], outcome: str | None,
                        live: str | None, lock: str = "released", holder: str = "",
                        volumes: set[str] | None = None) -> None:
    """The clean ending of a fault, all of it. ``outcome`` None: the run folder cannot be
    written (only what is there must be whole). ``lock``: "released" (free on the droplet) or
    "held" (still held, and the message names ``holder``). ``live``: the release that must serve."""
    # 1. the exit code the tool uses for this ending
    assert out.exit_code == code, out.message
    # 2. the message names the fix (the console wraps long lines: compared word by word)
    said = " ".join(out.message.split())
    for words in fix:
        assert " ".join(words.split()) in said, f"{words!r} not in the message:\n{out.message}"
    # 3. the artifact set
    folder = out.run.folder
    if outcome is not None:
        manifest = out.manifest
        assert manifest["outcome"] == outcome and manifest["exit_code"] == code
        assert (folder / "summary.md").is_file() and (folder / "report.html").is_file()
        assert all((folder / f).is_file() for f in out.files), "run.json lists a file that is not there"
        assert any(s["status"] == "failed" for s in manifest["steps"]) or outcome in ("partial", "success")
    if folder is not None:
        assert not [p for p in folder.rglob(".*.tmp")], "half-written files left in the run folder"
    # 4. the lock
    if lock == "released":
        assert not world.lock_held(), "the deploy lock is still held"
    else:
        assert world.lock_held() and holder in said, f"the lock is held and the message does not name {holder!r}"
    # 5. no secret, anywhere the operator or a bug report gets
    secrets = secrets_of(world)
    assert secrets
    texts = {"the message": out.message}
    if folder is not None:
        texts |= {str(f): f.read_text(errors="replace") for f in folder.rglob("*") if f.is_file()}
    for where, text in texts.items():
        leaked = [s[:6] + "..." for s in secrets if s in text]
        assert not leaked, f"secret(s) {leaked} in {where}"
    # 6. nothing lost
    assert world.current() == live, f"{world.current()} is live, expected {live}"
    assert world.docker.volume_removals == [], f"a volume was removed: {world.docker.volume_removals}"
    if volumes is not None:
        assert world.docker.volumes == volumes


def pushed(out: Outcome) -> str | None:
    """The release the run pushed, if it got that far."""
    return (out.manifest["details"].get("push") or {}).get("release_id")


def release_meta_outcome(world: World, out: Outcome) -> str | None:
    """The pushed release's recorded outcome, if a release was pushed."""
    release = pushed(out)
    return world.release_meta(release).get("outcome") if release else None
