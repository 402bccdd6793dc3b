"""What the live progress display polls on the droplet while a long command runs.

Compose builds and starts the stack as one blocking SSH command; these read the state beside it,
each poll one short read-only command on its own exec channel of the same connection (an SSH
connection carries several channels at once). Each returns item -> state for deploy.report.progress.
"""
from __future__ import annotations

from typing import Mapping

from remote import commands as cmd
from remote import images
from remote.compose import ComposeSpec, ServiceState
from remote.host import Host

POLL_TIMEOUT = 30        # seconds; a poll that hangs must not hold the step up for long


def label(state: ServiceState) -> str:
    """One word for a container: starting, healthy, unhealthy, running (no healthcheck), or
    docker's own state when it is not running (created, restarting, exited, ...)."""
    if state.state == "running":
        return state.health or "running"
    return state.state or "unknown"


_HEALTH = {"(healthy)": "healthy", "(health: starting)": "starting", "(unhealthy)": "unhealthy"}
_STATES = (("Up", "running"), ("Exited", "exited"), ("Created", "created"), ("Restarting", "restarting"),
           ("Removal", "removing"), ("Dead", "dead"), ("Paused", "paused"))


def parse_status(status: str) -> tuple[str, str]:
    """(state, health) from docker's status text: ``Up 3 seconds (health: starting)`` ->
    (running, starting); ``Exited (1) 2 seconds ago`` -> (exited, "")."""
    state = next((word for prefix, word in _STATES if status.startswith(prefix)), status.split(" ", 1)[0].lower())
    if "(Paused)" in status:
        state = "paused"
    health = next((word for text, word in _HEALTH.items() if status.endswith(text)), "")
    return state, health if state == "running" else ""


class ServiceStates:
    """The services whose container changed since the first poll, with their state: a container
    that keeps running untouched is not progress; a recreated one goes created -> starting ->
    healthy. Services are keyed by compose service name; beside an old container, the newest
    one is the service's. Read with `docker ps` (no compose CLI: cheap on the droplet while it
    starts containers)."""

    def __init__(self, target: Host, spec: ComposeSpec) -> None:
        self.target, self.spec = target, spec
        self._baseline: dict[str, tuple[str, str]] | None = None

    def __call__(self) -> dict[str, str]:
        res = self.target.run(cmd.container_states(self.spec.project), check=False, timeout=POLL_TIMEOUT)
        now: dict[str, tuple[str, str]] = {}
        for line in res.stdout.splitlines() if res.ok else []:
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[1] not in now:          # newest first
                state, health = parse_status(parts[2])
                now[parts[1]] = (parts[0], label(ServiceState(parts[1], state, health, parts[2], parts[0])))
        if self._baseline is None:
            self._baseline = now
        return {name: word for name, (container, word) in sorted(now.items())
                if self._baseline.get(name) != (container, word)}


class BuiltImages:
    """Each service being built: ``building`` until its release-tagged image exists, then ``built``
    (services sharing an image are built together)."""

    def __init__(self, target: Host, refs: Mapping[str, str]) -> None:
        self.target, self.refs = target, dict(refs)

    def __call__(self) -> dict[str, str]:
        present = images.lookup(self.target, self.refs.values())
        return {name: "building" if present.get(ref, images.MISSING) == images.MISSING else "built"
                for name, ref in sorted(self.refs.items())}
