"""What the live progress display polls on the droplet while a long command runs.

Compose builds and starts the stack as one blocking SSH command; these read the state beside it,
each poll one short read-only command on its own exec channel of the same connection (an SSH
connection carries several channels at once). Each returns item -> state for deploy.report.progress.
"""
from __future__ import annotations

from typing import Mapping

from remote import commands as cmd
from remote import images
from remote.compose import ComposeSpec, ServiceState, parse_ps_json, states_from_ps
from remote.host import Host

POLL_TIMEOUT = 30        # seconds; a poll that hangs must not hold the step up for long


def label(state: ServiceState) -> str:
    """One word for a container: starting, healthy, unhealthy, running (no healthcheck), or
    docker's own state when it is not running (created, restarting, exited, ...)."""
    if state.state == "running":
        return state.health or "running"
    return state.state or "unknown"


class ServiceStates:
    """The services whose container changed since the first poll, with their state: a container
    that keeps running untouched is not progress; a recreated one goes created -> starting ->
    healthy. Services are keyed by compose service name."""

    def __init__(self, target: Host, spec: ComposeSpec) -> None:
        self.target, self.spec = target, spec
        self._baseline: dict[str, tuple[str, str]] | None = None

    def __call__(self) -> dict[str, str]:
        res = self.target.run(cmd.ps(self.spec.on(self.target.layout), json=True), check=False,
                              timeout=POLL_TIMEOUT)
        rows = states_from_ps(parse_ps_json(res.stdout)) if res.ok else {}
        now = {name: (s.container_id, label(s)) for name, s in rows.items()}
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
