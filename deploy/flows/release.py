"""The tasks that change what runs: deploy, push, up and rollback, written once for one droplet
and for N. What differs between Compose and Swarm is the runtime's (deploy/runtime/).

    deploy      provision (or find) -> connect, bootstrap -> lock -> push, build -> go live -> verify
    push        find -> connect the leader -> lock -> push, build (nothing live changes)
    up          find -> connect -> lock -> the pushed release goes live (or the live one restarts)
    rollback    find -> connect -> lock -> a previous healthy release goes live again -> verify
"""
from __future__ import annotations

from deploy import steps, wiring
from deploy.cluster import Cluster
from core.errors import OperatorError
from deploy.flows import reach
from deploy.flows.inspect import verify
from deploy.report.run import Run
from deploy.runtime import Candidate, Runtime, for_cluster
from deploy.settings import Settings, require_stack_keys
from deploy.wiring import REAL_EDGES, Edges, Inventory
from remote import sync
from remote.target import Target

ROLLBACK_OK = ("success", "rolled-back")   # releases that were live and healthy


def deploy(run: Run, settings: Settings, update_only: bool = False, edges: Edges = REAL_EDGES) -> None:
    settings.require("DOMAIN")
    account = None if update_only else steps.token_check(run, edges.cloud, wiring.cloud_spec(settings, need_key=False))
    require_stack_keys(settings)  # before anything is created: nothing is made for a deploy that cannot start
    local = wiring.local_release(settings)  # hashed once: the lock names the release pushed
    if account is None:
        cluster = reach.find(run, settings, edges, required=True)
        assert cluster is not None
    else:
        cluster = reach.provision(run, settings, edges, account)
    runtime = for_cluster(cluster, settings, edges.cloud)
    with reach.connected(run, settings, edges, cluster.nodes) as inventory:
        if not update_only:
            reach.settle(run, settings, inventory, new=True)
        leaving = _reach_leaving(run, settings, edges, cluster)
        try:
            ship(run, settings, runtime, inventory, local, update_only, cluster, leaving)
        finally:
            if leaving is not None:
                leaving.close()
        verify(run, settings, edges, cluster, runtime, inventory)


def ship(run: Run, settings: Settings, runtime: Runtime, inventory: Inventory, local: sync.LocalRelease,
         update_only: bool, cluster: Cluster, leaving: Inventory | None = None) -> None:
    """Under the deploy lock: push the release to the leader, build its images while the live
    release serves, put it live, retire the nodes beyond the count, prune old releases. A
    failure before going live changes nothing live; a failure after it switches back."""
    leader = inventory.targets[0]
    try:
        with steps.locked(run, leader, local.release_id, settings.lock_wait):
            runtime.prepare(run, inventory)
            pushed = steps.push(run, leader, local, settings.stack_env_file(), settings.min_free_mb)
            # Update-only builds just the services whose build inputs changed (None: all), plus
            # any whose image is missing on the droplet.
            image_map = steps.build(run, leader, wiring.compose_spec(settings), pushed, local.compose,
                                    pushed.changed_services if update_only else None)
            recreate = (sync.services_for_mounts(local.compose, pushed.changed + pushed.removed, local.compose_dir)
                        if pushed.previous_release else set())  # first release: every container is new
            runtime.go_live(run, leader, Candidate(pushed.release_id, pushed.previous_release, image_map,
                                                   frozenset(recreate)))
            if leaving is not None:
                runtime.retire(run, leader, leaving, cluster.surplus)
            steps.prune(run, leader, settings.releases_keep)
    except OperatorError:
        inspect_best_effort(run, runtime, inventory)
        raise


def _reach_leaving(run: Run, settings: Settings, edges: Edges, cluster: Cluster) -> Inventory | None:
    """A node about to be removed is asked to leave the swarm itself; one that does not answer is
    removed from the leader's side alone."""
    if not cluster.surplus:
        return None
    leaving = wiring.inventory(settings, cluster.surplus, edges)
    for target in leaving:
        try:
            steps.connect(run, target, quick=True)
        except OperatorError as exc:
            run.warn(f"{target.name} (being removed) cannot be reached ({exc.message}): the swarm drops it "
                     "without it leaving; its droplet is deleted all the same")
    return leaving


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
    cluster = reach.find(run, settings, edges, required=True)
    assert cluster is not None
    with reach.connected(run, settings, edges, cluster.nodes[:1]) as inventory:   # images are built once
        reach.settle(run, settings, inventory, new=False)
        leader = inventory.targets[0]
        with steps.locked(run, leader, local.release_id, settings.lock_wait):
            pushed = steps.push(run, leader, local, settings.stack_env_file(), settings.min_free_mb)
            steps.build(run, leader, wiring.compose_spec(settings), pushed, local.compose, pushed.changed_services)
    run.log(f"release {pushed.release_id} is on {leader.name}, built and not live: `inv up` puts it live")


def up_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    """Put the release `inv push` left live, with the same zero-downtime cutover as a deploy;
    with nothing newer pushed, start the live release again (after a reboot, or a container
    removed by hand)."""
    cluster = reach.find(run, settings, edges, required=True)
    assert cluster is not None
    runtime = for_cluster(cluster, settings, edges.cloud)
    with reach.connected(run, settings, edges, cluster.nodes) as inventory:
        reach.settle(run, settings, inventory, new=False)
        leader = inventory.targets[0]
        with steps.locked(run, leader, "(up)", settings.lock_wait):
            runtime.prepare(run, inventory)
            with run.step("choose-release") as step:
                current, pushed = _pushed_release(leader)
                if pushed is None and current is None:
                    raise OperatorError("no release on the droplet yet", "run `inv push` first (or `inv deploy`)")
                step.note(f"{current or '(none)'} -> {pushed.id}" if pushed else f"{current} again (nothing newer pushed)")
            if pushed is None:
                assert current is not None
                meta = sync.read_release_meta(leader, current) or {}
                runtime.restart(run, leader, current, meta.get("images") or {})
                return
            runtime.go_live(run, leader, Candidate(pushed.id, current, pushed.meta.get("images") or {},
                                                   _mount_changes(settings, leader, current, pushed)))
            steps.prune(run, leader, settings.releases_keep)


def _pushed_release(leader: Target) -> tuple[str | None, sync.ReleaseInfo | None]:
    """(the live release, the newest release pushed and built after it that never went live)."""
    found = sync.list_releases(leader)
    current = next((r.id for r in found if r.current), None)
    newest = found[-1] if found else None
    if newest is None or newest.current or newest.outcome is not None or not newest.meta.get("images"):
        return current, None
    if current is not None and newest.id < current:
        return current, None
    return current, newest


def _mount_changes(settings: Settings, leader: Target, current: str | None, chosen: sync.ReleaseInfo) -> frozenset[str]:
    """Services whose bind-mounted files differ between the live release and ``chosen`` (Traefik's
    config): only they are recreated, as recreating Traefik for nothing would drop requests."""
    if current is None:   # nothing runs yet: every container is new
        return frozenset()
    live_manifest = (sync.read_release_meta(leader, current) or {}).get("manifest")
    changed = (sum(sync.diff_manifests(live_manifest, chosen.meta.get("manifest") or {}), [])
               if live_manifest is not None else None)
    return frozenset(sync.services_for_mounts(sync.read_compose(settings.stack_dir / "compose.yml"), changed))


def rollback(run: Run, settings: Settings, release: str | None, edges: Edges = REAL_EDGES) -> None:
    """Start a previous successful release again: its files, env snapshot and images; no rebuild."""
    cluster = reach.find(run, settings, edges, required=True)
    assert cluster is not None
    runtime = for_cluster(cluster, settings, edges.cloud)
    with reach.connected(run, settings, edges, cluster.nodes) as inventory:
        leader = inventory.targets[0]
        with steps.locked(run, leader, release or "(previous)", settings.lock_wait):
            with run.step("choose-release") as step:
                current, chosen = choose_rollback(leader, release)
                wanted = chosen.meta.get("images") or {}
                why = runtime.can_return_to(leader, chosen.id, wanted)
                if why:
                    raise OperatorError(f"release {chosen.id} cannot start again: {why}",
                                        "deploy that release's sources again, or pick another release from "
                                        "`inv releases`")
                step.note(f"{current or '(none)'} -> {chosen.id}")
            runtime.go_live(run, leader, Candidate(chosen.id, current, wanted,
                                                   _mount_changes(settings, leader, current, chosen),
                                                   migrate=False, publish=False))
            if current and current != chosen.id:
                sync.record_outcome(leader, current, "rolled-back")
        verify(run, settings, edges, cluster, runtime, inventory)


def choose_rollback(target: Target, release: str | None) -> tuple[str | None, sync.ReleaseInfo]:
    """(current, the release to return to): the named one, or the newest good one before current.
    Only releases that were live and healthy, with their image map, qualify."""
    found = sync.list_releases(target)
    current = next((r.id for r in found if r.current), None)
    good = [r for r in found if r.outcome in ROLLBACK_OK and r.meta.get("images") and r.id != current]
    names = ", ".join(r.id for r in good[-5:]) or "none"
    if release is not None:
        pick = next((r for r in good if r.id == release), None)
        if pick is None:
            known = next((r for r in found if r.id == release), None)
            why = "does not exist" if known is None else (
                "is the live release" if release == current else f"never became healthy (outcome {known.outcome or 'none'})")
            raise OperatorError(f"release {release} {why}; it cannot be rolled back to",
                                f"pick one of the releases that ran healthy: {names} (see `inv releases`)")
        return current, pick
    older = [r for r in good if current is None or r.id < current]
    if not older:
        raise OperatorError(f"no release older than {current or '(none)'} ran healthy: nothing to roll back to",
                            "list releases with `inv releases`")
    return current, older[-1]
