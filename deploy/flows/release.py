"""The tasks that change what runs: deploy, push and up, written once for one droplet
and for N. What differs between Compose and Swarm is the runtime's (deploy/runtime/).

    deploy      provision (or find) -> connect, bootstrap -> lock -> push, build -> go live -> verify
    push        find -> connect the leader -> lock -> push, build (nothing live changes)
    up          find -> connect -> lock -> the pushed release goes live (or the live one restarts)

rollback (deploy/flows/rollback.py) puts a previous release live again.
"""
from __future__ import annotations

from typing import Protocol

from core.errors import OperatorError
from deploy import backup_steps, releases, rotation, steps, wiring
from deploy.flows import reach
from deploy.flows.inspect import verify
from deploy.report.run import Run
from deploy.runtime import Candidate, Runtime, for_cluster
from deploy.settings import Settings, require_stack_keys
from deploy.wiring import REAL_EDGES, Edges, Inventory
from remote import sync
from remote.host import Host


class Filler(Protocol):
    """Fills a new stack's empty database before its first release starts (a disaster
    recovery, deploy.flows.backup.Recovery)."""

    def check(self, leader: Host) -> None: ...

    def apply(self, run: Run, leader: Host, runtime: Runtime, release_id: str) -> None: ...


def deploy(run: Run, settings: Settings, update_only: bool = False, edges: Edges = REAL_EDGES,
           fill: Filler | None = None) -> None:
    settings.require("DOMAIN")
    account = None if update_only else steps.token_check(run, edges.cloud, wiring.cloud_spec(settings, need_key=False))
    require_stack_keys(settings)  # before anything is created: nothing is made for a deploy that cannot start
    local = wiring.local_release(settings)  # hashed once: the lock names the release pushed
    if account is None:
        cluster = reach.find(run, settings, edges)
    else:
        cluster = reach.provision(run, settings, edges, account)
    runtime = for_cluster(cluster, settings, edges)
    with reach.connected(run, settings, edges, cluster.nodes) as inventory:
        if not update_only:
            reach.settle(run, settings, inventory, new=True)
        if fill is not None:
            fill.check(inventory.targets[0])   # before the push: refused, it changes nothing
        ship(run, settings, runtime, inventory, local, update_only, fill)
        verify(run, settings, edges, cluster, runtime, inventory)


def ship(run: Run, settings: Settings, runtime: Runtime, inventory: Inventory, local: sync.LocalRelease,
         update_only: bool, fill: Filler | None = None) -> None:
    """Under the deploy lock: push the release to the leader, build its images while the live
    release serves, put it live, retire the nodes beyond the count, prune old releases. A
    failure before going live changes nothing live; a failure after it switches back."""
    leader = inventory.targets[0]
    try:
        with steps.locked(run, leader, local.release_id, settings.lock_wait):
            runtime.prepare(run, inventory)
            env, rotated = steps.release_env(run, leader, settings)
            pushed, image_map = _push_and_build(run, settings, leader, local, env, every=not update_only)
            recreate = (sync.services_for_mounts(local.compose, pushed.changed + pushed.removed, local.compose_dir)
                        if pushed.previous_release else set())  # first release: every container is new
            if fill is not None:
                fill.apply(run, leader, runtime, pushed.release_id)
            runtime.go_live(run, leader, Candidate(
                pushed.release_id, pushed.previous_release, image_map, frozenset(recreate),
                before_migrating=backup_steps.before_migrating(run, leader, runtime, pushed.previous_release,
                                                               settings.skip_backup),
                migrate_with_live_env=bool(rotation.DATABASE & set(rotated)), verified_after=True))
            runtime.retire(run, leader)
            steps.prune(run, inventory.targets, settings.releases_keep,
                        built=bool((run.details.get("build") or {}).get("built")))
    except OperatorError:
        inspect_best_effort(run, runtime, inventory)
        raise


def _push_and_build(run: Run, settings: Settings, leader: Host, local: sync.LocalRelease, env: str,
                    every: bool) -> tuple[sync.PushResult, dict[str, dict[str, str]]]:
    """The release's files and ``env`` file to the leader, then its images built there
    (``every``: all services; otherwise those whose build inputs changed, plus any whose image
    is missing)."""
    pushed = steps.push(run, leader, local, env, settings.min_free_mb)
    return pushed, steps.build(run, leader, wiring.compose_spec(settings), pushed, local.compose,
                               None if every else pushed.changed_services)


def inspect_best_effort(run: Run, runtime: Runtime, inventory: Inventory) -> None:
    """After a failure the stack may be half up: its state is what the operator needs."""
    try:
        runtime.inspect(run, inventory)
    except Exception as exc:  # noqa: BLE001 - the original failure is what gets reported
        run.warn(f"could not collect remote state after the failure: {exc}")


def push_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    """Upload a release to the leader and build its images; nothing live changes (`inv up` puts
    it live)."""
    require_stack_keys(settings)
    local = wiring.local_release(settings)
    cluster = reach.find(run, settings, edges)
    with reach.connected(run, settings, edges, cluster.nodes[:1]) as inventory:   # images are built once
        reach.settle(run, settings, inventory, new=False)
        leader = inventory.targets[0]
        with steps.locked(run, leader, local.release_id, settings.lock_wait):
            pushed, _ = _push_and_build(run, settings, leader, local, steps.release_env(run, leader, settings)[0],
                                        every=False)
    run.log(f"release {pushed.release_id} is on {leader.name}, built and not live: `inv up` puts it live")


def up_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    """Put the release `inv push` left live, with the same zero-downtime cutover as a deploy;
    with nothing newer pushed, start the live release again (after a reboot, or a container
    removed by hand)."""
    cluster = reach.find(run, settings, edges)
    runtime = for_cluster(cluster, settings, edges)
    with reach.connected(run, settings, edges, cluster.nodes) as inventory:
        reach.settle(run, settings, inventory, new=False)
        leader = inventory.targets[0]
        with steps.locked(run, leader, "(up)", settings.lock_wait):
            runtime.prepare(run, inventory)
            with run.step("choose-release") as step:
                found = sync.list_releases(leader)
                current, pushed = releases.live(found), releases.pushed(found)
                if pushed is None and current is None:
                    raise OperatorError("no release on the droplet yet", "run `inv push` first (or `inv deploy`)")
                step.note(f"{current or '(none)'} -> {pushed.id}" if pushed else f"{current} again (nothing newer pushed)")
            if pushed is None:
                assert current is not None
                meta = sync.read_release_meta(leader, current) or {}
                runtime.restart(run, leader, current, meta.get("images") or {})
                return
            runtime.go_live(run, leader, Candidate(
                pushed.id, current, pushed.meta.get("images") or {}, mount_changes(settings, leader, current, pushed),
                before_migrating=backup_steps.before_migrating(run, leader, runtime, current, settings.skip_backup),
                migrate_with_live_env=bool(current and rotation.DATABASE & set(rotation.changed(
                    steps.release_env_values(run, leader), steps.release_env_values(run, leader, pushed.id),
                    rotation.DATABASE)))))
            steps.prune(run, inventory.targets, settings.releases_keep)


def mount_changes(settings: Settings, leader: Host, current: str | None, chosen: sync.ReleaseInfo) -> frozenset[str]:
    live_meta = (sync.read_release_meta(leader, current) or {}) if current else None
    return releases.mount_changes(sync.read_compose(settings.stack_dir / "compose.yml"), live_meta, chosen)

