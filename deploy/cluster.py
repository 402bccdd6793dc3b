"""The machines a run acts on. One droplet is a cluster of one.

A ``Node`` is the one shape of a host from provision to run.json: converted from the
DigitalOcean answer (``Node.of``) or from DROPLET_IP, turned into an SSH target by wiring and
into a record for run.json by ``record``; nothing else carries a host around.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from core.errors import EXIT_CONFIG, OperatorError
from deploy import cloud

LEADER = "leader"   # node 1: the edge DNS names, the data, the releases and the deploy lock
WORKER = "worker"   # nodes 2..N of a swarm


@dataclass(frozen=True)
class Node:
    name: str
    ip: str                      # public IPv4: SSH, and the edge on the leader
    private_ip: str = ""         # the VPC address a swarm forms over
    droplet_id: int | None = None
    region: str | None = None
    role: str = LEADER
    status: str = ""             # DigitalOcean's word (new, active, off, archive); "" unknown (DROPLET_IP)

    @classmethod
    def of(cls, droplet: cloud.DropletInfo, role: str = LEADER) -> "Node":
        return cls(name=droplet.name, ip=droplet.public_ipv4 or "", private_ip=droplet.private_ipv4 or "",
                   droplet_id=droplet.id, region=droplet.region, role=role, status=droplet.status or "")

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "ip": self.ip or None, "private_ip": self.private_ip or None,
                "droplet_id": self.droplet_id, "region": self.region, "role": self.role,
                "status": self.status or None}


@dataclass(frozen=True)
class Cluster:
    """Node 1 (the leader) first, then 2..N. ``surplus``: nodes beyond the count asked for, still
    in the swarm until a full deploy drains and deletes them."""

    nodes: tuple[Node, ...]
    surplus: tuple[Node, ...] = ()

    @classmethod
    def of(cls, droplets: Sequence[cloud.DropletInfo], surplus: Sequence[cloud.DropletInfo] = ()) -> "Cluster":
        return cls(nodes=tuple(Node.of(d, LEADER if k == 0 else WORKER) for k, d in enumerate(droplets)),
                   surplus=tuple(Node.of(d, WORKER) for d in surplus))

    @property
    def leader(self) -> Node:
        return self.nodes[0]

    @property
    def is_swarm(self) -> bool:
        """More than one node runs under Docker Swarm; one node runs Docker Compose."""
        return len(self.nodes) > 1

    def record(self) -> list[dict[str, Any]]:
        return [n.record() for n in self.nodes]


def refuse_shared_addresses(nodes: Sequence[Node]) -> None:
    """Two nodes the API lists at one address are one machine to SSH, whose host key is pinned
    by address: a deploy would treat node 3 as node 2 (seen on the lab, when a restarted node
    came back at another address than the one listed)."""
    by_address: dict[str, list[str]] = {}
    for node in nodes:
        if node.ip:
            by_address.setdefault(node.ip, []).append(node.name)
    shared = {address: names for address, names in by_address.items() if len(names) > 1}
    if shared:
        raise OperatorError("; ".join(f"{' and '.join(names)} are both listed at {address}"
                                      for address, names in shared.items()) + ", so the deploy cannot tell them apart",
                            "check the droplets' addresses in the DigitalOcean console (a droplet just deleted or "
                            "powered off may still be listed); run again once each node has its own")


def wanted_count(asked: int | None, existing: int, droplet_name: str, project: str) -> int:
    """How many nodes a full deploy makes the cluster: NODES, or unset the cluster's own size (1
    for a new stack). One node of a swarm is refused: Compose beside the swarm would fight it
    for 80/443 and start an empty PostgreSQL, and the way back is manual."""
    count = asked or max(1, existing)
    if count == 1 and existing > 1:
        raise OperatorError(
            f"the cluster runs {existing} nodes as a Docker Swarm and NODES is 1",
            f"unset NODES to keep the {existing} nodes. Back to one droplet is not automated: `inv deploy "
            f"--nodes 2`, then on {droplet_name} `docker stack rm {project}` and `docker swarm leave --force`, "
            f"delete {droplet_name}-2, remove the tag {cloud.cluster_tag(droplet_name)} from {droplet_name}, and "
            "deploy with NODES=1 (the data volumes are kept)", exit_code=EXIT_CONFIG)
    return count
