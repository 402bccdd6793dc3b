"""Docker Swarm over the droplets' VPC: form it (idempotently), label the data node, and read
what `inv verify` reports (nodes, services, tasks).

The command builders are pure (tested as strings); ``form`` runs them through each node's
Target. Every node advertises and listens on its private address only: Swarm's ports
(2377/tcp, 7946/tcp+udp, 4789/udp) then never face the internet, and the Cloud Firewall admits
them only from the cluster's tag.

Join tokens are secrets (a token is all a machine needs to join and, for the manager token,
to run anything on the cluster). ``form`` registers each one with the run's redaction registry
the moment it is read, and hands it to a joining node in a 0600 file that the join command
deletes: never on a command line, which `ps` shows and the run log records.
"""
from __future__ import annotations

import json
import posixpath
import shlex
import secrets
from dataclasses import dataclass, field
from typing import Callable, Sequence

from remote.errors import RemoteError
from remote.target import Target

SWARM_PORT = 2377
DATA_LABEL = "stackdeploy.data"
HINT = ("check Docker runs on every node (`docker info`) and that the nodes reach each other on "
        "their private addresses (the Cloud Firewall must admit 2377/tcp, 7946/tcp+udp and "
        "4789/udp from the cluster's tag)")


@dataclass(frozen=True)
class Node:
    """A droplet as the cluster sees it: its Target and its private (VPC) address."""

    target: Target
    private_ip: str

    @property
    def name(self) -> str:
        return self.target.name


@dataclass(frozen=True)
class LocalState:
    """`docker info`'s Swarm section on one node."""

    state: str            # inactive | pending | active | error | locked
    node_id: str
    manager: bool         # ControlAvailable: this node runs the Raft store
    cluster_id: str

    @property
    def joined(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class SwarmResult:
    managers: tuple[str, ...]              # node names
    workers: tuple[str, ...]
    joined: tuple[str, ...]                # nodes that joined during this call
    node_ids: dict[str, str] = field(default_factory=dict)   # name -> swarm node id


# --- command builders (pure) ------------------------------------------------------------------
def info_command() -> str:
    return "docker info --format '{{json .Swarm}}'"


def init_command(private_ip: str) -> str:
    ip = shlex.quote(private_ip)
    return (f"docker swarm init --advertise-addr {ip} --listen-addr {ip}:{SWARM_PORT} "
            f"--data-path-addr {ip}")


def join_token_command(role: str) -> str:
    if role not in ("worker", "manager"):
        raise ValueError(f"a swarm role is worker or manager, not {role!r}")
    return f"docker swarm join-token -q {role}"


def join_command(token_file: str, manager_ip: str, private_ip: str) -> str:
    """Join with the token read from ``token_file``, which is removed whatever happens."""
    f, ip = shlex.quote(token_file), shlex.quote(private_ip)
    return (f"trap 'rm -f {f}' EXIT; docker swarm join --token \"$(cat {f})\" --advertise-addr {ip} "
            f"--listen-addr {ip}:{SWARM_PORT} --data-path-addr {ip} {shlex.quote(manager_ip)}:{SWARM_PORT}")


def label_command(node_id: str, label: str, value: str = "true") -> str:
    return f"docker node update --label-add {shlex.quote(f'{label}={value}')} {shlex.quote(node_id)}"


def nodes_command() -> str:
    return "docker node ls --format '{{json .}}'"


def services_command() -> str:
    return "docker service ls --format '{{json .}}'"


def tasks_command(stack: str) -> str:
    return f"docker stack ps --no-trunc --format '{{{{json .}}}}' {shlex.quote(stack)}"


# --- parsing (pure) -----------------------------------------------------------------------------
def parse_info(text: str) -> LocalState:
    data = json.loads(text.strip() or "{}")
    return LocalState(state=str(data.get("LocalNodeState") or "inactive"), node_id=str(data.get("NodeID") or ""),
                      manager=bool(data.get("ControlAvailable")), cluster_id=str((data.get("Cluster") or {}).get("ID") or ""))


def json_lines(text: str) -> list[dict]:
    """`--format '{{json .}}'` output: one object per line."""
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def manager_count(nodes: int) -> int:
    """One manager below three nodes, three from three on: Raft keeps a quorum through the loss
    of one manager only with three (two managers would be worse than one: either loss stops it)."""
    return 3 if nodes >= 3 else 1


# --- on the nodes -------------------------------------------------------------------------------
def local_state(target: Target) -> LocalState:
    return parse_info(target.run(info_command(), f"reading the swarm state of {target.name}", hint=HINT).stdout)


def _join(node: Node, token: str, manager_ip: str) -> None:
    token_file = posixpath.join("/tmp", f".swarm-join-{secrets.token_hex(6)}")
    node.target.put(token_file, token.encode(), mode=0o600)
    node.target.run(join_command(token_file, manager_ip, node.private_ip), f"joining {node.name} to the swarm",
                    timeout=120, hint=HINT)


def form(nodes: Sequence[Node], register_secret: Callable[[str], None],
         on_event: Callable[[str], None] = lambda _m: None) -> SwarmResult:
    """Make ``nodes`` one swarm: the first node is the leader (``swarm init`` if no node is in a
    swarm yet), the first ``manager_count`` nodes are managers, the rest workers. Nodes already
    in this swarm are left alone; a node in another swarm is an error, never silently moved.
    The first node carries DATA_LABEL (PostgreSQL and Redis stay with their volumes there)."""
    if not nodes:
        raise ValueError("a swarm needs at least one node")
    states = {n.name: local_state(n.target) for n in nodes}
    leader = nodes[0]
    cluster = states[leader.name].cluster_id if states[leader.name].joined else ""
    if not cluster:
        if any(s.joined for s in states.values()):
            others = ", ".join(n for n, s in states.items() if s.joined)
            raise RemoteError(f"{others} already belong to a swarm but {leader.name} (the first node) does not",
                              f"make {leader.name} leave nothing behind: on each of {others} run "
                              "`docker swarm leave --force`, then deploy again")
        leader.target.run(init_command(leader.private_ip), f"starting the swarm on {leader.name}", hint=HINT)
        on_event(f"swarm started on {leader.name} ({leader.private_ip})")
        states[leader.name] = local_state(leader.target)
        cluster = states[leader.name].cluster_id
    elif not states[leader.name].manager:
        raise RemoteError(f"{leader.name} is in a swarm but not a manager of it",
                          f"promote it from a manager (`docker node promote {leader.name}`) or make it leave "
                          "(`docker swarm leave --force`), then deploy again")
    tokens: dict[str, str] = {}

    def token(role: str) -> str:
        if role not in tokens:
            value = leader.target.run(join_token_command(role), f"reading the {role} join token",
                                      hint=HINT).stdout.strip()
            register_secret(value)
            tokens[role] = value
        return tokens[role]

    wanted_managers = manager_count(len(nodes))
    joined: list[str] = []
    for index, node in enumerate(nodes[1:], start=1):
        state = states[node.name]
        if state.joined and state.cluster_id and state.cluster_id != cluster:
            raise RemoteError(f"{node.name} belongs to another swarm ({state.cluster_id[:12]})",
                              f"on {node.name} run `docker swarm leave --force` if that swarm is not in use, "
                              "then deploy again")
        if state.joined:
            continue
        role = "manager" if index < wanted_managers else "worker"
        _join(node, token(role), leader.private_ip)
        joined.append(node.name)
        on_event(f"{node.name} joined the swarm as a {role}")
    ids = {n.name: local_state(n.target).node_id for n in nodes}
    leader.target.run(label_command(ids[leader.name], DATA_LABEL), f"labelling {leader.name} as the data node",
                      hint=HINT)
    listed = {n["ID"]: n for n in json_lines(leader.target.run(nodes_command(), "listing the swarm's nodes",
                                                                hint=HINT).stdout)}
    managers = tuple(n.name for n in nodes if listed.get(ids[n.name], {}).get("ManagerStatus"))
    workers = tuple(n.name for n in nodes if n.name not in managers)
    return SwarmResult(managers=managers, workers=workers, joined=tuple(joined), node_ids=ids)
