"""Finding or making the cluster, and reaching its nodes: the start every task shares.

NODES unset means "the cluster that exists" (its droplets carry the cluster tag, so the cloud
says how many there are; 1 for a new stack). NODES set to another size is a scale request,
which only a full deploy carries out; every other task refuses it before anything changes.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Iterator

from core.errors import EXIT_CONFIG, OperatorError
from deploy import cloud, hostkey, steps, wiring
from deploy.cluster import Cluster, Node, refuse_shared_addresses, wanted_count
from deploy.report.run import Run
from deploy.settings import Settings
from deploy.wiring import Edges, Inventory


class NoCluster(OperatorError):
    """No droplet of this stack exists: nothing was ever deployed (or DROPLET_NAME is wrong).
    Its own type, so a task that only reads what runs can call it a usage error (exit 2)."""


def find(run: Run, settings: Settings, edges: Edges, exact: bool = True) -> Cluster:
    """DROPLET_IP, else the cluster found by node 1's name and the cluster tag (token checked
    once, read-only). ``exact``: a NODES that differs from the nodes found is refused (tasks
    that change something); otherwise every node found is looked at, with a warning."""
    if settings.droplet_ip:
        node = Node(name=settings.droplet_name, ip=settings.droplet_ip)
        run.target = {"name": node.name, "region": None, "ip": node.ip}
        run.skip_step("discover", f"DROPLET_IP={node.ip} given")
        return Cluster((node,))
    spec = wiring.cloud_spec(settings, need_key=False)
    steps.token_check(run, edges.cloud, spec)
    return _discover(run, edges, spec, settings.nodes, exact)


def find_or_partial(run: Run, settings: Settings, edges: Edges) -> Cluster | None:
    """For the tasks that only look (verify, collect): a cluster that cannot be found makes the
    run partial, with the reason and the fix, instead of stopping it."""
    try:
        return find(run, settings, edges, exact=False)
    except OperatorError as exc:
        run.registry.add_help(exc.hint)  # our own help text: keep its wording readable
        run.mark_partial("remote verification", f"{exc.message}; set DROPLET_IP or fix it ({exc.hint})")
        return None


def _discover(run: Run, edges: Edges, spec: cloud.CloudSpec, wanted: int | None, exact: bool) -> Cluster:
    with run.step("discover") as step:
        found = edges.cloud.find_cluster(spec)
        if not found:
            raise NoCluster(f"no droplet named {spec.droplet_name} in the account",
                                "run a full `inv deploy` first (only a full deploy creates droplets), "
                                "or check DROPLET_NAME")
        names = cloud.node_names(spec.droplet_name, wanted or len(found))
        by_name = {d.name: d for d in found}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise OperatorError(f"the cluster should have {len(names)} nodes but {len(names) - len(missing)} exist "
                                f"(missing: {', '.join(missing)})",
                                "run a full `inv deploy` (it creates the missing nodes; no other task creates "
                                "droplets), or unset NODES to use the nodes that exist", exit_code=EXIT_CONFIG)
        extra = [d for d in found if d.name not in names]
        message = f"the cluster has {len(found)} nodes but NODES is {wanted} ({', '.join(d.name for d in extra)} beyond it)"
        if extra and exact:
            raise OperatorError(message, "a new node count is a full `inv deploy --nodes N` (it drains the surplus "
                                "nodes out of the swarm and deletes them); unset NODES to use the nodes that exist",
                                exit_code=EXIT_CONFIG)
        cluster = Cluster.of([by_name[name] for name in names] + extra)
        refuse_shared_addresses(cluster.nodes)
        steps.record_target(run, found[0])
        run.record("nodes", cluster.record())
        if not cluster.leader.ip:
            raise OperatorError(f"droplet {cluster.leader.name} has no public IPv4 address",
                                "check the droplet's networking in the DigitalOcean console, or set DROPLET_IP")
        step.note(", ".join(f"{n.name} at {n.ip}" for n in cluster.nodes))
        if extra:
            step.warn(f"{message}; every node is looked at: " + step.step.message)
    return cluster


def provision(run: Run, settings: Settings, edges: Edges, account: cloud.AccountInfo) -> Cluster:
    """Droplet(s), firewall allowlist and DNS; every new node carries an SSH host key generated
    here, pinned in known_hosts before anyone connects. One droplet is a cluster of one."""
    spec = wiring.cloud_spec(settings)
    count = wanted_count(settings.nodes, len(edges.cloud.find_cluster(spec)), spec.droplet_name, settings.project)
    names = cloud.node_names(spec.droplet_name, count)
    known_hosts = settings.known_hosts_path

    def on_droplet(droplet: cloud.DropletInfo) -> None:
        # run.json names the target as soon as it is known, even when provisioning fails after
        if droplet.name == names[0]:
            steps.record_target(run, droplet)
        if droplet.created:
            hostkey.promote(known_hosts, droplet.name)

    def on_event(level: str, msg: str) -> None:
        run.warn(msg) if level == "warning" else run.log(msg)

    with run.step("provision") as step, hostkey.pending(known_hosts, names, run.registry) as keys:
        spec = dataclasses.replace(spec, nodes=count, host_key=keys[names[0]])
        if count == 1:
            result = edges.cloud.provision(spec, on_event=on_event, account=account, on_droplet=on_droplet)
            droplets, surplus = [result.droplet], []
        else:
            result = edges.cloud.provision_cluster(spec, on_event=on_event, account=account,
                                                   on_droplet=on_droplet, host_key_for=keys.__getitem__)
            droplets, surplus = list(result.nodes), list(result.surplus)
        cluster = Cluster.of(droplets, surplus)
        steps.record_target(run, droplets[0])
        run.record("provision", result)
        run.record("nodes", cluster.record())
        refuse_shared_addresses(cluster.nodes)   # before a key is pinned for an address two nodes share
        for droplet in droplets:
            if droplet.public_ipv4:
                steps.pin_host_key(run, known_hosts, droplet, spec.ssh_port)
        made = sum(1 for d in droplets if d.created)
        what = (f"{'created' if made else 'found'} droplet {cluster.leader.name} ({cluster.leader.ip or 'no public IPv4'})"
                if count == 1 else f"{count} nodes ({made} created)" + (f", {len(surplus)} surplus" if surplus else ""))
        step.note(f"{what}; firewall {result.firewall.status}; dns {result.dns.status}")
        if result.warnings:
            step.warn(step.step.message + "; " + "; ".join(result.warnings))
    run.artifacts.write_json("provision.json", run.details["provision"])
    unreachable = [n.name for n in cluster.nodes if not n.ip or (cluster.is_swarm and not n.private_ip)]
    if unreachable:
        raise OperatorError(f"{', '.join(unreachable)} {'has' if len(unreachable) == 1 else 'have'} no public"
                            + (" and private" if cluster.is_swarm else "") + " IPv4 address yet, so nothing can be "
                            "shipped", "check the droplets' networking in the DigitalOcean console, then rerun")
    return cluster


@contextmanager
def connected(run: Run, settings: Settings, edges: Edges, nodes: tuple[Node, ...]) -> Iterator[Inventory]:
    """An inventory whose targets are all connected; closed whatever happens."""
    inventory = wiring.inventory(settings, nodes, edges, run.command_timer)
    try:
        for target in inventory:
            steps.connect(run, target)
        yield inventory
    finally:
        inventory.close()


def settle(run: Run, settings: Settings, inventory: Inventory, new: bool) -> None:
    """Every node can take a release: a new one gets the full bootstrap (cloud-init done, the
    release root ours, Docker answering); a found one one command that waits only while
    cloud-init still runs (a task right after `inv provision` of a new droplet)."""
    for target in inventory:
        if new:
            steps.bootstrap(run, target, settings.cloud_init_timeout)
        else:
            steps.settled(run, target, settings.cloud_init_timeout)
