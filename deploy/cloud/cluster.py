"""A cluster: N droplets, one tag, one VPC, one firewall. provision_cluster() makes it, and
plan_cluster() / find_cluster() read it; delete_surplus() removes the nodes a smaller count drops."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import digitalocean

from deploy.cloud.allowlist import _ensure_allowlist
from deploy.cloud.api import AccountInfo, CloudError, CloudSpec, OnEvent, _call, _library_env, _log_event, _manager
from deploy.cloud.dns import DnsResult, _ensure_dns
from deploy.cloud.droplets import (DropletInfo, _create_droplet, _find, _info, _one_named, _settle_creation,
                                   _wait_active, wait_for_ssh)
from deploy.cloud.firewall import FirewallResult
from deploy.cloud.keys import _ensure_ssh_key
from deploy.cloud.provision import ProvisionResult, _begin, _checked_input, provision
from deploy.cloud.tags import cluster_tag, now_s, presence_tag
from deploy.hostkey import HostKey


# --- names and results --------------------------------------------------------------------
def node_names(droplet_name: str, count: int) -> list[str]:
    """Node 1 keeps ``droplet_name`` (growing from one droplet keeps the live one), then
    ``<droplet_name>-2``, ``-3``, ..."""
    return [droplet_name] + [f"{droplet_name}-{k}" for k in range(2, count + 1)]


@dataclass(frozen=True)
class ClusterResult:
    """What provision_cluster() made or found. ``surplus``: nodes numbered beyond spec.nodes
    (a smaller count than the cluster has), left exactly as they are, still running, tagged and
    behind the firewall: a later step drains them out of the Swarm and deletes them."""

    nodes: tuple[DropletInfo, ...]      # node 1 (named droplet_name) first, then -2, -3, ...
    surplus: tuple[DropletInfo, ...]
    tag: str                            # the cluster tag ("" for one droplet: no cluster)
    vpc_uuid: str | None                # the VPC every node is in (None: not known, one droplet)
    firewall: FirewallResult
    dns: DnsResult                      # the records point at node 1
    warnings: list[str]
    changed: bool
    ssh_ready: bool = False             # every node's sshd answered
    ssh_key_registered: bool = False

    @property
    def droplet(self) -> DropletInfo:
        """Node 1: the droplet DNS points at (the one droplet when there is no cluster)."""
        return self.nodes[0]


HostKeyFor = Callable[[str], HostKey]


def _node_spec(spec: CloudSpec, name: str, tag: str) -> CloudSpec:
    """Node 2..N: looked up, created and settled as a droplet of its own whose first tag is the
    cluster tag, so a droplet of that name without the tag (another deployment's) is never adopted."""
    return dataclasses.replace(spec, droplet_name=name, tags=(tag, *(t for t in spec.tags if t != tag)))


# --- reading the cluster ------------------------------------------------------------------
def _members(spec: CloudSpec, tag: str, on_event: OnEvent) -> dict[int, Any]:
    """Nodes 2.. of the cluster as listed by its tag, by number (node 1 is found by its name)."""
    listed = _call(spec, "listing the cluster's droplets",
                   lambda: _manager(spec).get_all_droplets(tag_name=tag), on_event)
    numbered = re.compile(rf"^{re.escape(spec.droplet_name)}-([1-9][0-9]*)$")
    by_number: dict[int, list[Any]] = {}
    for droplet in listed:
        match = numbered.match(droplet.name)
        if match and int(match.group(1)) >= 2:
            by_number.setdefault(int(match.group(1)), []).append(droplet)
    return {k: _one_named(f"{spec.droplet_name}-{k}", sorted(ds, key=lambda d: int(d.id)))
            for k, ds in sorted(by_number.items())}


def find_cluster(spec: CloudSpec) -> list[DropletInfo]:
    """Read-only: every node of the cluster that exists, node 1 first, then by number (also
    those beyond spec.nodes: the caller sees a changed count); empty without node 1."""
    with _library_env(spec):
        first = _find(spec, _log_event)
        if first is None:
            return []
        members = _members(spec, cluster_tag(spec.droplet_name), _log_event)
    nodes = [first] + [d for k, d in sorted(members.items()) if d is not None]
    return [_info(d, created=False) for d in nodes]


@dataclass(frozen=True)
class ClusterPlan:
    """What provision_cluster() would do with the droplets: ``nodes`` 1..N, each the droplet
    found or None (to be created); ``surplus``: nodes beyond N, to be drained and deleted."""

    tag: str
    nodes: tuple[tuple[str, DropletInfo | None], ...]
    surplus: tuple[DropletInfo, ...]

    @property
    def changes(self) -> bool:
        return bool(self.surplus) or any(d is None for _, d in self.nodes)


def plan_cluster(spec: CloudSpec, on_event: OnEvent = _log_event) -> ClusterPlan:
    """The cluster's nodes as provision_cluster() would find them, with GET requests only."""
    tag = cluster_tag(spec.droplet_name)
    with _library_env(spec):
        first = _find(spec, on_event)
        members = _members(spec, tag, on_event)
    found = {k: d for k, d in members.items() if d is not None} | ({1: first} if first is not None else {})
    nodes = tuple((name, _info(found[k], created=False) if k in found else None)
                  for k, name in enumerate(node_names(spec.droplet_name, spec.nodes), 1))
    surplus = tuple(_info(d, created=False) for k, d in sorted(found.items()) if k > spec.nodes)
    return ClusterPlan(tag=tag, nodes=nodes, surplus=surplus)


# --- the nodes a smaller count drops --------------------------------------------------------
def delete_surplus(spec: CloudSpec, surplus: Sequence[DropletInfo], on_event: OnEvent = _log_event) -> list[str]:
    """Delete the nodes a smaller cluster no longer has, once they are out of the Swarm. Only a
    droplet listed under the cluster tag, numbered beyond spec.nodes, with the id given, is
    deleted: never node 1, never a droplet that merely shares a name. Returns the names deleted."""
    tag = cluster_tag(spec.droplet_name)
    wanted = {d.id for d in surplus}
    deleted: list[str] = []
    with _library_env(spec):
        members = _members(spec, tag, on_event)
        for k, droplet in sorted(members.items()):
            if droplet is None or k <= spec.nodes or int(droplet.id) not in wanted:
                continue
            _call(spec, f"deleting droplet {droplet.name} (id {droplet.id})", droplet.destroy, on_event,
                  missing_ok=True)
            deleted.append(droplet.name)
            on_event("info", f"deleted droplet {droplet.name} (id {droplet.id}): it left the swarm")
    return deleted


# --- provision_cluster() and its parts ----------------------------------------------------
def _same_vpc(spec: CloudSpec, found: dict[int, Any]) -> str | None:
    """The VPC of the nodes that exist (node 1's, else the lowest node's); CloudError, before
    anything is written, when they are not all in it: Swarm nodes talk over one VPC."""
    if not found:
        return None
    first = min(found)
    vpc = getattr(found[first], "vpc_uuid", None) or None
    strays = [d for d in found.values() if (getattr(d, "vpc_uuid", None) or None) != vpc]
    if strays:
        stray = strays[0]
        raise CloudError(f"droplet {stray.name} (id {stray.id}) is in VPC {stray.vpc_uuid}, not in "
                         f"{found[first].name}'s VPC {vpc}: the cluster's nodes talk over one VPC",
                         f"remove the tag {cluster_tag(spec.droplet_name)!r} from {stray.name} and delete "
                         "it once its work is moved; the next deploy creates it again in the right VPC")
    return vpc


def _join_tag(spec: CloudSpec, droplet: Any, tag: str, on_event: OnEvent) -> bool:
    """Tag a node that lacks the cluster tag (node 1 of a single-droplet deploy); True if tagged."""
    if tag in (droplet.tags or []):
        return False
    api = digitalocean.Tag(token=spec.token, name=tag)
    _call(spec, "creating the cluster tag", api.create, on_event)   # same name: same tag
    _call(spec, f"tagging droplet {droplet.name} as a cluster node",
          lambda: api.add_droplets([int(droplet.id)]), on_event)
    droplet.tags = [*(droplet.tags or []), tag]
    on_event("info", f"droplet {droplet.name} joined the cluster tag {tag}")
    return True


def _cluster_of_one(one: ProvisionResult) -> ClusterResult:
    """provision()'s result as a cluster of one droplet: no tag, no VPC named, no surplus."""
    return ClusterResult(nodes=(one.droplet,), surplus=(), tag="", vpc_uuid=None, firewall=one.firewall,
                         dns=one.dns, warnings=one.warnings, changed=one.changed,
                         ssh_ready=one.ssh_ready, ssh_key_registered=one.ssh_key_registered)


def _existing_nodes(specs: list[CloudSpec], tag: str, on_event: OnEvent) -> tuple[dict[int, Any], list[Any]]:
    """(the nodes 1..N that exist, by number; the nodes beyond N, oldest number first), read
    before anything is made: node 1 by its name, the others by the cluster tag or by their name."""
    spec = specs[0]
    first = _find(spec, on_event)
    members = _members(spec, tag, on_event)
    surplus = [members[k] for k in sorted(members) if k > spec.nodes]
    found = {k: d for k, d in members.items() if k <= spec.nodes} | ({1: first} if first else {})
    for k, node in enumerate(specs[1:], 2):  # before anything is made: is the name somebody else's?
        if k not in found and (droplet := _find(node, on_event)) is not None:
            found[k] = droplet               # ours, created meanwhile
    return found, surplus


@dataclass(frozen=True)
class _Nodes:
    """Nodes 1..N as this run leaves them, found or created."""

    droplets: list[Any]
    created: set[int]           # the numbers of the nodes this run created
    vpc: str | None             # the VPC they are in (None: none was found, and node 1 named none)
    key_registered: bool        # our SSH key was registered to create them


def _make_nodes(specs: list[CloudSpec], found: dict[int, Any], vpc: str | None, tag: str, user_data: str,
                operator_ip: str | None, host_key_for: HostKeyFor,
                report: Callable[[DropletInfo], DropletInfo], on_event: OnEvent) -> _Nodes:
    """Node 1..N in order: the droplet ``found``, or a new one in ``vpc`` (else in node 1's, once
    it is made). Node 1 is created with ``user_data``, the operator's announcement and the cluster
    tag; nodes 2..N with their own host key (``host_key_for``) and the announcement."""
    spec = specs[0]
    key_id, key_registered = None, False
    droplets: list[Any] = []
    created: set[int] = set()
    announce = (presence_tag(operator_ip, now_s(), spec.operator),) if operator_ip else ()
    for k, node in enumerate(specs, 1):
        droplet = found.get(k)
        if droplet is None:
            if key_id is None:
                key_id, key_registered = _ensure_ssh_key(spec, on_event)
            data = user_data if k == 1 else _checked_input(
                dataclasses.replace(node, host_key=host_key_for(node.droplet_name)))
            droplet = _create_droplet(node, key_id, data, on_event,
                                      (*announce, tag) if k == 1 else announce, vpc_uuid=vpc)
            created.add(k)
            _settle_creation(node, droplet, on_event)  # a concurrent deploy's older node wins
            vpc = vpc or getattr(droplet, "vpc_uuid", None) or None
        else:
            on_event("info", f"found droplet {droplet.name} (id {droplet.id}, {droplet.status})")
        droplets.append(droplet)
        report(_info(droplet, k in created))
    return _Nodes(droplets, created, vpc, key_registered)


def _cluster_firewall(spec: CloudSpec, lead: Any, operator_ip: str | None, tag: str,
                      on_event: OnEvent) -> FirewallResult:
    """The allowlist from the operators announced on node 1 (``lead``), the Swarm ports open
    between the droplets tagged ``tag``; skipped without an operator IP (no firewall wanted)."""
    if operator_ip:  # before the nodes are reachable, so SSH is never open to all
        return _ensure_allowlist(spec, lead, operator_ip, on_event, cluster=tag)
    on_event("info", "allowlist skipped: the Cloud Firewall was not touched "
                     "(nor the Swarm ports opened between the nodes)")
    return FirewallResult("skipped", None, [])


def _wait_for_nodes_ssh(spec: CloudSpec, infos: list[DropletInfo], on_event: OnEvent) -> tuple[bool, list[str]]:
    """(every node's sshd answered, a warning for each node that did not or has no address)."""
    warnings: list[str] = []
    ssh_ready = True
    for info in infos:
        if info.public_ipv4 is None:
            warnings.append(f"droplet {info.name} has no public IPv4 address yet; remote steps "
                            "need one (check the droplet's networking in the control panel)")
            on_event("warning", warnings[-1])
            ssh_ready = False
        elif spec.ssh_wait_timeout > 0:
            if not wait_for_ssh(info.public_ipv4, spec.ssh_port, spec.ssh_wait_timeout):
                warnings.append(f"SSH on {info.name} ({info.public_ipv4}:{spec.ssh_port}) did not answer "
                                f"within {spec.ssh_wait_timeout:g} s; check the firewall allowlist "
                                "(your IP) or raise DO_SSH_WAIT_TIMEOUT")
                on_event("warning", warnings[-1])
                ssh_ready = False
        else:
            ssh_ready = False
    return ssh_ready, warnings


def _lead_dns(spec: CloudSpec, lead: DropletInfo, on_event: OnEvent) -> DnsResult:
    """The domain's records pointed at node 1 (``lead``), when there is a domain and an address."""
    if not spec.domain:
        return DnsResult("skipped", [], "no DOMAIN configured: DNS records were not managed")
    if lead.public_ipv4 is None:
        return DnsResult("skipped", [], f"DNS not updated: droplet {lead.name} has no public IPv4")
    return _ensure_dns(spec, lead.public_ipv4, on_event)


def provision_cluster(spec: CloudSpec, on_event: OnEvent = _log_event,
                      account: AccountInfo | None = None,
                      on_droplet: Callable[[DropletInfo], None] | None = None,
                      host_key_for: HostKeyFor | None = None) -> ClusterResult:
    """``spec.nodes`` droplets in one VPC, each carrying the cluster tag (cluster_tag()) beside
    spec.tags, behind one firewall attached by that tag: SSH from the operators, 80/443 from
    anywhere, the Swarm ports (swarm_rules()) only between the nodes. DNS points at node 1.

    spec.nodes == 1 is provision() exactly (same droplet, same requests, no tag, no Swarm rules).
    Node 1 is spec.droplet_name, so growing from one droplet keeps it (it is tagged, and the
    firewall gains the Swarm rules and the tag); nodes 2..N are created in node 1's VPC.
    Shrinking deletes nothing here: nodes beyond spec.nodes come back as ``surplus`` for a
    later step to drain and delete. Node 1 carries the operators' announcements (the SSH
    allowlist); concurrency, retries and the token check behave as in provision().

    ``host_key_for(name)``: the SSH host key for node ``name`` (2..N) about to be created
    (node 1's is spec.host_key); a node of its own key each, kept and pinned by the caller.
    ``on_droplet`` hears of every node as in provision()."""
    if spec.nodes < 1:
        raise CloudError(f"a cluster of {spec.nodes} droplets makes no sense", "set the node count to 1 or more")
    if spec.nodes == 1:
        return _cluster_of_one(provision(spec, on_event, account, on_droplet))
    if host_key_for is None:
        raise CloudError("no SSH host keys were generated for the cluster's nodes",
                         "provision through deploy.flows.reach.provision, which generates and pins one per node")

    def report(info: DropletInfo) -> DropletInfo:
        if on_droplet is not None:
            on_droplet(info)
        return info

    user_data, operator_ip = _begin(spec, on_event, account)
    tag = cluster_tag(spec.droplet_name)
    specs = [spec] + [_node_spec(spec, name, tag) for name in node_names(spec.droplet_name, spec.nodes)[1:]]
    with _library_env(spec):
        found, surplus = _existing_nodes(specs, tag, on_event)
        vpc = _same_vpc(spec, found)
        made = _make_nodes(specs, found, vpc, tag, user_data, operator_ip, host_key_for, report, on_event)
        tagged = _join_tag(spec, made.droplets[0], tag, on_event)
        firewall = _cluster_firewall(spec, made.droplets[0], operator_ip, tag, on_event)
        infos = [report(_info(_wait_active(node, droplet, on_event), k in made.created))
                 for k, (node, droplet) in enumerate(zip(specs, made.droplets), 1)]
        ssh_ready, warnings = _wait_for_nodes_ssh(spec, infos, on_event)
        dns = _lead_dns(spec, infos[0], on_event)
    if dns.warning and dns.warning not in warnings:
        warnings.append(dns.warning)
    if surplus:
        on_event("info", f"{len(surplus)} node(s) beyond the {spec.nodes} wanted kept for draining: "
                         + ", ".join(d.name for d in surplus))
    changed = (bool(made.created) or made.key_registered or tagged or firewall.status in ("created", "updated")
               or bool(dns.records_changed))
    return ClusterResult(nodes=tuple(infos), surplus=tuple(_info(d, False) for d in surplus), tag=tag,
                         vpc_uuid=made.vpc, firewall=firewall, dns=dns, warnings=warnings, changed=changed,
                         ssh_ready=ssh_ready, ssh_key_registered=made.key_registered)
