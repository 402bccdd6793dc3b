"""The tasks that look without changing what runs: verify, collect, releases and the deploy
lock. A node that cannot be reached makes the artifact set partial, never a crash."""
from __future__ import annotations

from concurrent import futures
from contextlib import contextmanager
from typing import Iterator

from core.errors import OperatorError
from deploy import backup_steps, releases, steps, wiring
from deploy.checks.model import CheckResult
from deploy.cluster import Cluster
from deploy.flows import reach
from deploy.report.run import Run
from deploy.runtime import Runtime, for_cluster
from deploy.settings import Settings
from deploy.wiring import REAL_EDGES, Edges, Inventory
from remote import lock, sync
from remote.host import Host


def verify(run: Run, settings: Settings, edges: Edges, cluster: Cluster | None, runtime: Runtime | None,
           inventory: Inventory | None = None) -> None:
    """Checks from here against the edge (the leader), then the cluster's state over SSH.
    Missing pieces make the set partial."""
    if cluster is None or runtime is None:
        run.skip_step("checks", "no droplet IP")
        run.skip_step("collect", "no droplet IP")
        return
    settings.require("DOMAIN")
    # The checks go from here to the edge while collect reads the nodes over SSH: side by side.
    checked = run.beside(lambda: steps.run_checks(run, edges.run_checks, wiring.check_target(settings, cluster.leader.ip),
                                                  wiring.checks_config(settings)))
    down, backup_failed = _inspect(run, settings, edges, cluster, runtime, inventory, backups=True)
    report = checked.result()
    failed = report.by_status("fail") + [_named(name) for name in backup_failed]
    if failed or down:
        problems = ([f"{len(failed)} check(s) failed: " + ", ".join(r.name for r in failed)] if failed else []) \
            + (["not running or not healthy: " + ", ".join(down)] if down else [])
        raise steps.CheckFailures("; ".join(problems), (f"{runtime.down_hint}; " if down else "")
                                  + "each check's observed value and message are in summary.md and http/ in the run folder")


def _named(name: str) -> CheckResult:
    return CheckResult(name, "fail", None, None, "")


def _inspect(run: Run, settings: Settings, edges: Edges, cluster: Cluster, runtime: Runtime,
             inventory: Inventory | None, backups: bool = False) -> tuple[list[str], list[str]]:
    """Collect what the nodes that answer can tell; what is not serving as it should and
    (``backups``) the backup checks that fail."""
    own = inventory is None
    inventory = inventory or wiring.inventory(settings, cluster.nodes, edges, run.command_timer)
    try:
        for target in inventory:
            if not target.connected:
                try:
                    steps.connect(run, target, quick=True)
                except OperatorError as exc:
                    run.mark_partial("remote collection" if len(inventory) == 1 else f"node {target.name}",
                                     f"{exc.message}. Check that SSH_KEY_PATH's public key is on the droplet for "
                                     f"{settings.deploy_user} and that port {settings.ssh_port} is allowed "
                                     "from this machine (inv provision updates the allowlist)")
        leader = inventory.targets[0]
        if not leader.connected:
            run.skip_step("collect", f"{leader.name} cannot be reached")
            return [], []
        # Three reads of the leader, each on its own channels of the one connection: side by side.
        collected = run.beside(lambda: runtime.inspect(run, inventory))
        drift = run.beside(lambda: steps.check_drift(run, leader))
        try:
            backup_failed = backup_steps.check(run, leader, runtime) if backups else []
        finally:
            futures.wait([collected, drift])
        drift.result()
        return collected.result(), backup_failed
    finally:
        if own:
            inventory.close()


def _found(run: Run, settings: Settings, edges: Edges) -> tuple[Cluster | None, Runtime | None]:
    cluster = reach.find_or_partial(run, settings, edges)
    return cluster, (for_cluster(cluster, settings, edges) if cluster is not None else None)


def verify_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    verify(run, settings, edges, *_found(run, settings, edges))


def collect_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    cluster, runtime = _found(run, settings, edges)
    if cluster is None or runtime is None:
        run.skip_step("collect", "no droplet IP")
        return
    _inspect(run, settings, edges, cluster, runtime, None)


@contextmanager
def _on_leader(run: Run, settings: Settings, edges: Edges) -> Iterator[Host]:
    """Node 1, connected: it alone holds the releases and the cluster's one deploy lock."""
    cluster = reach.find(run, settings, edges, exact=False)
    with reach.connected(run, settings, edges, cluster.nodes[:1]) as inventory:
        yield inventory.targets[0]


def list_releases(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> list[sync.ReleaseInfo]:
    """The releases on the leader (the only node that holds them), oldest first."""
    with _on_leader(run, settings, edges) as leader:
        found = steps.list_releases(run, leader)
    lines = [releases.line(r) for r in found]
    run.artifacts.write_text("releases.txt", "\n".join(lines) + "\n")
    for line in lines:
        run.console.print(line, markup=False)
    return found


def lock_status(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    """The cluster's one deploy lock, on the leader."""
    with _on_leader(run, settings, edges) as leader:
        state = lock.read(leader)
    run.record("lock", state)
    if state is None:
        run.log("deploy lock: free")
        return
    stale = lock.stale_reason(state, settings.lock_ttl)
    run.log(f"deploy lock: held by {state.describe()}"
            + (f"; stale: {stale} (`inv lock.release --if-stale` releases it)" if stale else ""))


def lock_release(run: Run, settings: Settings, edges: Edges = REAL_EDGES, if_stale: bool = False) -> None:
    """Release the deploy lock; ``if_stale``: only when its holder is surely gone (else LockHeld)."""
    with _on_leader(run, settings, edges) as leader:
        if if_stale:
            released = lock.release_if_stale(leader, settings.lock_ttl)
            run.log(f"stale deploy lock released (held by {released[0].describe()}: {released[1]})"
                    if released else "deploy lock was already free")
            return
        holder = lock.status(leader)
        lock.release(leader)
        run.log(f"deploy lock released (was held by {holder})" if holder else "deploy lock was already free")
