"""One droplet: the release runs under Docker Compose, replaced service by service with zero
downtime (remote/cutover.py), and a failed start puts the previous release back."""
from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Sequence

from core.errors import OperatorError
from deploy import live_secrets, migrations, steps, wiring
from deploy.report.run import Run
from deploy.runtime.base import Candidate
from deploy.settings import Settings
from deploy.wiring import Inventory
from remote import backup as backup_cmd
from remote import commands as cmd
from remote import compose, cutover, images, logs, oneoff, progress, status, sync
from remote.host import ConnectionLost, Host


class ComposeRuntime:
    name = "compose"
    down_hint = "`inv up` starts the live release's stopped services again (their logs are in remote/ in the run folder)"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = wiring.compose_spec(settings)
        self.compose_file = sync.read_compose(settings.stack_dir / "compose.yml")
        self._draining: tuple[compose.Draining, ...] = ()   # old containers the last go-live left draining
        self._ready: frozenset[str] = frozenset()   # new containers the last go-live saw answer their healthcheck

    def prepare(self, run: Run, inventory: Inventory) -> None:
        """Nothing to form: Docker Compose on one droplet needs only Docker."""

    def go_live(self, run: Run, leader: Host, release: Candidate) -> None:
        if release.migrate:
            _migrate(run, leader, self.spec, release, self.compose_file)
        recreate = set(release.recreate)
        with live_secrets.applied(run, leader, release.live, release.release_id, self.service_filters) as rotating:
            steps.switch(run, leader, release.release_id)
            with self._watched_up(run, leader):
                # The old containers drain while verify reads the new ones (inspect awaits them),
                # unless old passwords are retired right after this: then they must be gone first.
                result = _up(run, leader, self.spec, release.release_id, release.images, recreate,
                             fallback=release.live, fallback_recreate=recreate, together=release.together,
                             drain_later=release.verified_after and not rotating)
        self._draining += result.draining
        self._ready = result.ready

    def restart(self, run: Run, leader: Host, release_id: str, images_: dict[str, dict[str, str]]) -> None:
        live_secrets.publish_edge(run, leader, release_id)
        with self._watched_up(run, leader):
            _up(run, leader, self.spec, release_id, images_)

    def can_return_to(self, leader: Host, release_id: str, images_: dict[str, dict[str, str]]) -> str | None:
        present = images.lookup(leader, [e["ref"] for e in images_.values()])
        missing = sorted(ref for ref, image_id in present.items() if image_id == images.MISSING)
        return f"its images {', '.join(missing)} are gone from the droplet" if missing else None

    def retire(self, run: Run, leader: Host) -> None:
        """One droplet has no surplus: a cluster of one is never shrunk (deploy/cluster.py refuses 3 -> 1)."""

    def inspect(self, run: Run, inventory: Inventory) -> list[str]:
        """What runs, read while the old containers of the go-live before it may still drain
        (they are not counted as down); then those drains are awaited: an old container that
        could not be stopped is named (it would keep serving its release)."""
        down: list[str] = []
        for target in inventory:
            if target.connected:
                collected = steps.collect(run, target, wiring.collect_spec(self.settings), ready=self._ready)
                prefix = f"{target.name}: " if len(inventory) > 1 else ""
                down += [prefix + s for s in steps.not_serving(collected.services, compose.retiring(self._draining))]
        return down + self.drained(run)

    def drained(self, run: Run) -> list[str]:
        """Await the old containers the last go-live left draining; "service (...)" for each that
        could not be stopped and removed."""
        draining, self._draining = self._draining, ()
        failed = []
        for d in draining:
            try:
                d.done.result()
            except Exception as exc:  # noqa: BLE001 - reported as a service not as it should be
                failed.append(f"{d.service} (its old container could not be stopped: {exc})")
        if draining:
            run.record("drained", sorted(d.service for d in draining))
        return failed

    def database(self) -> tuple[str, ...]:
        return self.service_filters("postgres")

    def service_filters(self, service: str) -> tuple[str, ...]:
        return (f"label=com.docker.compose.project={self.spec.project}", f"label=com.docker.compose.service={service}")

    def snapshot(self, leader: Host) -> status.Snapshot:
        res = leader.run(status.compose_probe(leader.layout, self.spec.project), "reading what runs",
                         check=False, timeout=60)
        return status.parse_compose(res.stdout, self.spec.project, leader.name)

    def logs_command(self, leader: Host, request: logs.LogRequest) -> str:
        return logs.compose_command(self.spec.on(leader.layout), request)

    def one_off_command(self, leader: Host, service: str, argv: Sequence[str], tty: bool,
                        beside: str | None = None) -> str:
        # one project, one set of networks: the service reaches what it depends on already
        return oneoff.compose_one_off(self.spec.on(leader.layout), service, argv, tty)

    def stop_command(self, leader: Host, services: Sequence[str]) -> str:
        return cmd._c(self.spec.on(leader.layout), "stop", *services)

    def database_one_off(self, leader: Host, entrypoint: str, argv: Sequence[str] = (),
                         release_id: str | None = None) -> str:
        project = self.spec.for_release(leader.layout, release_id) if release_id else self.spec.on(leader.layout)
        return backup_cmd.compose_one_off(project, entrypoint, argv)

    def _watched_up(self, run: Run, target: Host) -> AbstractContextManager[None]:
        """Live progress of the up step: each recreated service's state (created, starting,
        healthy) while compose starts the stack in one blocking command."""
        return run.watching("up", progress.ServiceStates(target, self.spec))


def _migrate(run: Run, target: Host, spec: compose.ComposeSpec, release: Candidate, compose_file: dict) -> None:
    """The release's migration in a one-off container of its own compose project (the live
    release's env while the database passwords rotate: deploy/rotation.py)."""
    env_from = release.live if release.migrate_with_live_env else None
    rid = release.release_id
    migrations.migrate(
        run, target, release, compose_file,
        plan=lambda service, argv: compose.pending_migrations(target, spec, rid, service, argv, env_from),
        apply=lambda service, argv: compose.migrate(target, spec, rid, service, argv, env_from))


def _up(run: Run, target: Host, spec: compose.ComposeSpec, release_id: str, wanted: dict[str, dict[str, str]],
       recreate: set[str] = frozenset(), fallback: str | None = None,
       fallback_recreate: set[str] = frozenset(), together: bool = False,
       drain_later: bool = False) -> compose.UpResult:
    """Start the live release and wait until healthy; then compare what runs with ``wanted`` (the
    release's image ids). On failure, switch back to ``fallback`` and start it again, so the run
    can say which release is serving. ``drain_later``: the old containers may still drain when it
    returns (UpResult.draining)."""
    with run.step("up") as step:
        try:
            # `current` names the new release already: from here on an interrupt switches back
            with steps.interruptible(run, target, release_id, fallback,
                                restore=lambda: _restore(run, target, spec, fallback, fallback_recreate)):
                def announce(stop_first: list[str]) -> None:
                    run.record("recreated_in_place", stop_first)
                    if stop_first:  # said before it happens: these have one container, replaced stop-first
                        run.log(f"recreated in place, a brief interruption for what uses them: {', '.join(stop_first)}")

                result = cutover.cutover(target, spec, services_to_recreate=recreate, announce=announce,
                                         together=together, drain_later=drain_later)
                _ensure_wanted(target, spec, result, wanted)
        except (compose.ComposeError, ConnectionLost) as exc:
            # After a lost connection the next command reconnects: after a brief drop the live
            # release can still be put back, and the run says which one serves (or that
            # restoring failed too). Recording the outcome is best effort for the same reason.
            if isinstance(exc, compose.ComposeError):
                steps.keep_diagnostics(run, target, exc)
            with contextlib.suppress(OperatorError):
                sync.record_outcome(target, release_id, "failed")
            if fallback:
                exc.message = f"{exc.message}; {_restore(run, target, spec, fallback, fallback_recreate)}"
            raise
        run.record("up", {"recreated": result.recreated, "rebuilt": result.rebuilt, "replaced": result.replaced,
                          "services": {n: s.status for n, s in result.services.items()}})
        step.note(f"replaced start-first {', '.join(result.replaced) or 'nothing'}; recreated "
                  f"{', '.join(sorted(set(result.recreated) - set(result.replaced))) or 'nothing else'}; every service "
                  "healthy and running its release image")
    sync.record_outcome(target, release_id, "success")
    run.record("live_release", release_id)
    return result


def _ensure_wanted(target: Host, spec: compose.ComposeSpec, result: compose.UpResult,
                   wanted: dict[str, dict[str, str]]) -> None:
    """What runs must be what the release names: a container on another image is recreated once,
    and a second mismatch is an error (never a success while the wrong code runs)."""
    def wrong(states: dict[str, compose.ServiceState]) -> list[str]:
        return sorted(n for n, w in wanted.items() if n in states and states[n].image_id != w.get("id"))

    mismatch = wrong(result.services)
    if mismatch:
        mismatch = wrong(compose.force_recreate(target, spec, mismatch))
    if mismatch:
        name = mismatch[0]
        raise compose.ComposeError(name, f"runs another image than its release names ({wanted[name]['ref']})", {},
                                   hint="run `inv verify` and read remote/compose-ps.txt; deploy again")


def _restore(run: Run, target: Host, spec: compose.ComposeSpec, fallback: str, recreate: set[str]) -> str:
    try:
        sync.switch(target, fallback)
        cutover.cutover(target, spec, services_to_recreate=recreate)
    except OperatorError as exc:
        run.warn(f"restoring release {fallback} failed: {exc.message}")
        return f"restoring release {fallback} failed too ({exc.message})"
    run.record("live_release", fallback)
    run.warn(f"switched back: release {fallback} is serving")
    return f"still serving release {fallback}"
