"""What the day-2 tasks (status, logs, exec, manage, shell) share: the stack's services, the
cluster that runs it, its leader reached without waiting, and a service's running container.
They only look at, or into, what runs: no deploy lock, nothing changed.

Bad inputs are usage errors (exit 2) named before anything is sent anywhere when they can be:
an unknown service is refused from the stack's compose file, before the cloud is asked.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from core.errors import EXIT_CONFIG, OperatorError
from deploy import steps, wiring
from deploy.cluster import Cluster
from deploy.flows import reach
from deploy.report.run import Run
from deploy.runtime import Runtime, for_cluster
from deploy.settings import Settings
from deploy.wiring import Edges, Inventory
from remote import compose, sync
from remote.host import Host
from remote.status import Replica, Snapshot

DJANGO_FALLBACK = "django"


class UsageError(OperatorError):
    """A bad input to a day-2 task: what was wrong and what would be right."""

    exit_code = EXIT_CONFIG
    outcome = "config-error"


def stack_services(settings: Settings) -> list[str]:
    """The services of the stack's compose file, in its order."""
    return list((sync.read_compose(settings.stack_dir / "compose.yml").get("services") or {}))


def require_services(settings: Settings, names: Sequence[str]) -> list[str]:
    """``names`` when each is a service of the stack; otherwise a usage error listing them."""
    valid = stack_services(settings)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UsageError(f"{', '.join(unknown)} {'is not a service' if len(unknown) == 1 else 'are not services'} "
                         f"of the stack", f"name one of: {', '.join(valid)} (from {settings.stack_dir}/compose.yml)")
    return list(names)


def django_service(settings: Settings) -> str:
    """The service whose image runs manage.py: the one the release's migration runs in."""
    found = compose.migration(sync.read_compose(settings.stack_dir / "compose.yml"))
    return found[0] if found else DJANGO_FALLBACK


def find(run: Run, settings: Settings, edges: Edges) -> Cluster:
    """The cluster that exists; none yet is a usage error (exit 2), not a failure."""
    try:
        return reach.find(run, settings, edges, exact=False)
    except reach.NoCluster as exc:
        raise UsageError(f"{exc.message}: nothing is deployed yet", exc.hint) from None


@contextmanager
def reached(run: Run, settings: Settings, edges: Edges) -> Iterator[tuple[Cluster, Runtime, Inventory]]:
    """The cluster, its runtime, and its inventory with the leader connected: at once or not at
    all (an interactive task must not sit through a minute of retries). Other nodes are connected
    by whoever needs them. Closed whatever happens."""
    cluster = find(run, settings, edges)
    inventory = wiring.inventory(settings, cluster.nodes, edges, run.command_timer)
    try:
        steps.connect(run, inventory.targets[0], quick=True)
        yield cluster, for_cluster(cluster, settings, edges), inventory
    finally:
        inventory.close()


def snapshot(run: Run, runtime: Runtime, leader: Host) -> Snapshot:
    with run.step("snapshot") as step:
        snap = runtime.snapshot(leader)
        step.note(f"release {snap.release or 'none'}; " + (", ".join(snap.problems()) or "every service running"))
    return snap


def running_container(snap: Snapshot, service: str, prefer_node: str) -> Replica:
    """A running container of ``service``; none is a usage error naming the state it is in."""
    found = snap.exec_target(service, prefer_node)
    if found is not None:
        return found
    state = snap.service(service)
    why = "it has no container" if state is None or not state.replicas else f"it is {state.problem or state.state}"
    raise UsageError(f"{service} has no running container ({why})",
                     "`inv status` shows every service; `inv up` starts the live release's stopped services again"
                     + ("" if snap.release else "; nothing is live yet: `inv deploy` first"))


def node_host(inventory: Inventory, name: str, run: Run) -> Host:
    """The connected Host of the node named ``name`` (the leader's is connected already)."""
    host = next((t for t in inventory if t.name == name), None)
    if host is None:
        raise OperatorError(f"{name} runs the container but is not a node of the cluster found",
                            "run `inv status` to see the nodes; unset NODES to use the nodes that exist")
    if not host.connected:
        steps.connect(run, host, quick=True)
    return host
