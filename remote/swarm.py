"""Docker Swarm over the droplets' VPC: form it (idempotently), label the data node, and read
what `inv verify` reports (nodes, services, tasks).

The command builders are pure (tested as strings); ``form`` runs them through each node's
Host. Every node advertises and listens on its private address only: Swarm's ports
(2377/tcp, 7946/tcp+udp, 4789/udp) then never face the internet, and the Cloud Firewall admits
them only from the cluster's tag.

Join tokens are secrets (a token is all a machine needs to join and, for the manager token,
to run anything on the cluster). ``form`` registers each one with the run's redaction registry
the moment it is read, and hands it to a joining node in a 0600 file that the join sends to the
engine's API socket and deletes: never on a command line (docker's included), which `ps` shows
and the run log records.
"""
from __future__ import annotations

import json
import time
import posixpath
import shlex
import secrets
from dataclasses import dataclass, field
from typing import Callable, Sequence

from remote.errors import RemoteError
from remote.host import Host, RemoteCommandError

SWARM_PORT = 2377
NODE_UPDATE_TRIES = 5        # see update_node
OUT_OF_SEQUENCE = "update out of sequence"
ROLE_CHANGE_TIMEOUT = 60.0   # a promotion or demotion shows in `docker node ls` within seconds
DATA_LABEL = "stackdeploy.data"    # PostgreSQL and Redis stay with their volumes here
EDGE_LABEL = "stackdeploy.edge"    # Traefik: its ports, certificates and the address DNS names
HINT = ("check Docker runs on every node (`docker info`) and that the nodes reach each other on "
        "their private addresses (the Cloud Firewall must admit 2377/tcp, 7946/tcp+udp and "
        "4789/udp from the cluster's tag)")


@dataclass(frozen=True)
class Member:
    """A droplet as the cluster sees it: its Host and its private (VPC) address."""

    target: Host
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


def join_body(token: str, manager_ip: str, private_ip: str) -> bytes:
    """The Docker API's /swarm/join request: the token travels in this body, never in argv."""
    return json.dumps({"ListenAddr": f"{private_ip}:{SWARM_PORT}", "AdvertiseAddr": private_ip,
                       "DataPathAddr": private_ip, "RemoteAddrs": [f"{manager_ip}:{SWARM_PORT}"],
                       "JoinToken": token}).encode()


def join_command(body_file: str) -> str:
    """Join through the engine's API socket with the request body read from ``body_file``, which
    is removed whatever happens. (`docker swarm join --token` would put the token in docker's
    argv, which `ps` shows every user while the join runs.)"""
    f = shlex.quote(body_file)
    return (f"trap 'rm -f {f}' EXIT; curl -sS --fail-with-body --max-time 110 --unix-socket /var/run/docker.sock "
            f"-H 'Content-Type: application/json' --data-binary @{f} http://localhost/swarm/join")


def label_command(node_id: str, label: str, value: str = "true") -> str:
    return f"docker node update --label-add {shlex.quote(f'{label}={value}')} {shlex.quote(node_id)}"


def role_command(node_id: str, manager: bool) -> str:
    return f"docker node {'promote' if manager else 'demote'} {shlex.quote(node_id)}"


def availability_command(node_id: str, availability: str) -> str:
    if availability not in ("active", "pause", "drain"):
        raise ValueError(f"a node's availability is active, pause or drain, not {availability!r}")
    return f"docker node update --availability {availability} {shlex.quote(node_id)}"


def node_tasks_command(node_id: str, every_state: bool = False) -> str:
    """The tasks Swarm wants running on one node (``every_state``: with those told to stop)."""
    wanted = "" if every_state else " --filter desired-state=running"
    return f"docker node ps{wanted} --format '{{{{json .}}}}' {shlex.quote(node_id)}"


def scale_info_command(service: str) -> str:
    """"<replicas> <update order>" of one service."""
    return (f"docker service inspect --format '{{{{.Spec.Mode.Replicated.Replicas}}}} "
            f"{{{{.Spec.UpdateConfig.Order}}}}' {shlex.quote(service)}")


def scale_command(service: str, replicas: int) -> str:
    # --detach: the caller waits for the stack to settle (wait_rollout)
    return f"docker service scale --detach {shlex.quote(f'{service}={int(replicas)}')}"


def leave_command() -> str:
    return "docker swarm leave"


def remove_command(node_id: str) -> str:
    # --force: a node that left (or died) is Down; rm refuses a node it still thinks is up
    return f"docker node rm --force {shlex.quote(node_id)}"


def nodes_command() -> str:
    return "docker node ls --format '{{json .}}'"


def services_command() -> str:
    return "docker service ls --format '{{json .}}'"


def tasks_command(stack: str, as_json: bool = True) -> str:
    """Every task of the stack; ``as_json=False``: docker's table, for people (swarm-tasks.txt)."""
    fmt = " --format '{{json .}}'" if as_json else ""
    return f"docker stack ps --no-trunc{fmt} {shlex.quote(stack)}"


# --- parsing (pure) -----------------------------------------------------------------------------
def parse_info(text: str) -> LocalState:
    data = json.loads(text.strip() or "{}")
    return LocalState(state=str(data.get("LocalNodeState") or "inactive"), node_id=str(data.get("NodeID") or ""),
                      manager=bool(data.get("ControlAvailable")), cluster_id=str((data.get("Cluster") or {}).get("ID") or ""))


def task_service(task_name: str) -> str:
    """`docker node ps`'s task name ("stack_api.2", or "stack_api.<node id>" for a global
    service) -> its service ("stack_api")."""
    return task_name.strip().lstrip("\\_ ").rsplit(".", 1)[0]


def json_lines(text: str) -> list[dict]:
    """`--format '{{json .}}'` output: one object per line."""
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def manager_count(nodes: int) -> int:
    """One manager below three nodes, three from three on: Raft keeps a quorum through the loss
    of one manager only with three (two managers would be worse than one: either loss stops it)."""
    return 3 if nodes >= 3 else 1


# --- on the nodes -------------------------------------------------------------------------------
def local_state(target: Host) -> LocalState:
    return parse_info(target.run(info_command(), f"reading the swarm state of {target.name}", hint=HINT).stdout)


def _join(node: Member, token: str, manager_ip: str) -> None:
    body_file = posixpath.join("/tmp", f".swarm-join-{secrets.token_hex(6)}")
    node.target.put(body_file, join_body(token, manager_ip, node.private_ip), mode=0o600)
    node.target.run(join_command(body_file), f"joining {node.name} to the swarm", timeout=120, hint=HINT)


def form(nodes: Sequence[Member], register_secret: Callable[[str], None],
         on_event: Callable[[str], None] = lambda _m: None) -> SwarmResult:
    """Make ``nodes`` one swarm: the first node is the leader (``swarm init`` if no node is in a
    swarm yet), the first ``manager_count`` nodes are managers, the rest workers. Nodes already
    in this swarm are left alone; a node in another swarm is an error, never silently moved.
    The first node carries DATA_LABEL and EDGE_LABEL (see remote/stackfile.py's placement).
    Roles follow the count (_reconcile_roles) and every node is active (takes tasks)."""
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
    for label in (DATA_LABEL, EDGE_LABEL):
        update_node(leader.target, label_command(ids[leader.name], label), f"labelling {leader.name} {label}")
    listed = _reconcile_roles(leader.target, [ids[n.name] for n in nodes[:wanted_managers]], on_event)
    for node in nodes:   # a node a failed shrink left paused or drained is wanted again: it takes tasks
        availability = str(listed.get(ids[node.name], {}).get("Availability") or "Active")
        if availability.lower() != "active":
            update_node(leader.target, availability_command(ids[node.name], "active"),
                        f"making {node.name} active again")
            on_event(f"{node.name} was {availability.lower()}: active again")
    managers = tuple(n.name for n in nodes if listed.get(ids[n.name], {}).get("ManagerStatus"))
    workers = tuple(n.name for n in nodes if n.name not in managers)
    return SwarmResult(managers=managers, workers=workers, joined=tuple(joined), node_ids=ids)


def update_node(leader: Host, command: str, what: str, sleep: Callable[[float], None] = time.sleep) -> None:
    """Run one node update (availability, label, role). Swarm versions each node object and
    refuses an update read against a version that moved meanwhile (the node's own heartbeat, a
    role change settling) as "update out of sequence"; the CLI reads the version anew each
    call, so that refusal is tried again. Any other failure, or the last try's, raises."""
    for attempt in range(1, NODE_UPDATE_TRIES + 1):
        try:
            leader.run(command, what, hint=HINT)
            return
        except RemoteCommandError as exc:
            if OUT_OF_SEQUENCE not in (exc.result.stderr or "") or attempt == NODE_UPDATE_TRIES:
                raise
        sleep(0.25 * attempt)


def _listed(leader: Host) -> dict[str, dict]:
    return {n["ID"]: n for n in json_lines(leader.run(nodes_command(), "listing the swarm's nodes", hint=HINT).stdout)}


def _reconcile_roles(leader: Host, wanted: Sequence[str], on_event: Callable[[str], None]) -> dict[str, dict]:
    """Exactly the ``wanted`` node ids are managers: promoted first, then every other manager
    (a node joined when the cluster was smaller, or one being removed) demoted, so the Raft
    quorum never shrinks before it has grown. Returns the swarm's nodes as listed after."""
    listed = _listed(leader)
    promote = [i for i in wanted if i in listed and not listed[i].get("ManagerStatus")]
    demote = [i for i, n in listed.items() if n.get("ManagerStatus") and i not in wanted]
    for node_id in promote + demote:
        host = listed[node_id].get("Hostname") or node_id
        update_node(leader, role_command(node_id, node_id in promote),
                    f"{'promoting' if node_id in promote else 'demoting'} {host}")
        on_event(f"{host} is now a {'manager' if node_id in promote else 'worker'}")
    if not (promote or demote):
        return listed
    deadline = time.monotonic() + ROLE_CHANGE_TIMEOUT
    while True:   # a promoted node shows a ManagerStatus only once it has joined the Raft group
        listed = _listed(leader)
        managers = {i for i, n in listed.items() if n.get("ManagerStatus")}
        if managers == {i for i in wanted if i in listed} or time.monotonic() > deadline:
            return listed
        time.sleep(1)


@dataclass(frozen=True)
class Leaving:
    """A node the cluster no longer has: its droplet name and, when it answered, its Host."""

    name: str
    target: Host | None = None


def node_ids_by_name(leader: Host, leaving: Sequence[Leaving]) -> dict[str, str]:
    """name -> swarm node id of each leaving node that is still in the swarm: asked of the node
    itself when it answers, else matched by hostname (a droplet's hostname is its name)."""
    listed = _listed(leader)
    out: dict[str, str] = {}
    for node in leaving:
        node_id = ""
        if node.target is not None and node.target.connected:
            node_id = local_state(node.target).node_id
        if not node_id or node_id not in listed:
            node_id = next((i for i, n in listed.items() if n.get("Hostname") == node.name), "")
        if node_id:
            out[node.name] = node_id
    return out


ENDED = ("Shutdown", "Failed", "Complete", "Rejected", "Orphaned", "Remove")


def _running_on(leader: Host, node_id: str, stopping_too: bool = False) -> dict[str, int]:
    """service -> how many of its tasks Swarm wants running on the node; ``stopping_too``: also
    those told to stop that have not stopped yet (a drained node's, during their grace period)."""
    rows = json_lines(leader.run(node_tasks_command(node_id, every_state=stopping_too),
                                 "listing the tasks of a leaving node", hint=HINT).stdout)
    out: dict[str, int] = {}
    for row in rows:
        ended = str(row.get("CurrentState") or "").startswith(ENDED)
        if row.get("Name") and (row.get("DesiredState") == "Running" or (stopping_too and not ended)):
            service = task_service(str(row["Name"]))
            out[service] = out.get(service, 0) + 1
    return out


def _replicas_and_order(leader: Host, service: str) -> tuple[int, str]:
    out = leader.run(scale_info_command(service), f"reading {service}'s replicas", hint=HINT).stdout.split()
    replicas = int(out[0]) if out and out[0].isdigit() else 0   # "<no value>": a global service
    return replicas, (out[1] if len(out) > 1 else "")


def retire(leader: Host, leaving: Sequence[Leaving], stack: str, timeout: float,
           on_event: Callable[[str], None] = lambda _m: None, poll: float = 2.0,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Take ``leaving`` out of the swarm without a gap in service, then out of its node list.

    Draining alone stops a node's tasks before their replacements run. So: pause the nodes (no
    new task lands there; theirs keep serving), scale each start-first service up by the tasks
    it has there and wait until the extra tasks are healthy elsewhere, drain (only now do the
    old tasks stop), scale back, and let each node leave. Stop-first services (beat: never
    two) just move with the drain. The caller has demoted them already (form's role
    reconciliation). Returns the names removed; a node no longer in the swarm is skipped."""
    ids = node_ids_by_name(leader, leaving)
    if not ids:
        return []

    def settle() -> None:
        wait_rollout(leader, stack, leader.run(clock_command(), "reading the leader's clock").stdout.strip(),
                     timeout, poll=poll, sleep=sleep, clock=clock)

    for name, node_id in ids.items():
        update_node(leader, availability_command(node_id, "pause"), f"pausing {name} (no new tasks)", sleep)
    there: dict[str, int] = {}
    for node_id in ids.values():
        for service, count in _running_on(leader, node_id).items():
            there[service] = there.get(service, 0) + count
    scaled: dict[str, int] = {}
    for service, count in sorted(there.items()):
        replicas, order = _replicas_and_order(leader, service)
        if replicas and order == "start-first":
            leader.run(scale_command(service, replicas + count), f"adding {count} task(s) to {service}", hint=HINT)
            scaled[service] = replicas
    if scaled:
        on_event(f"starting {', '.join(scaled)} elsewhere before {', '.join(ids)} stop(s) theirs")
        settle()
    for name, node_id in ids.items():
        update_node(leader, availability_command(node_id, "drain"), f"draining {name}", sleep)
    deadline = clock() + timeout
    while True:
        left = {name: _running_on(leader, node_id, stopping_too=True) for name, node_id in ids.items()}
        left = {name: tasks for name, tasks in left.items() if tasks}
        if not left:
            break
        if clock() >= deadline:
            raise RemoteError(f"tasks still run on the nodes being removed after {timeout:g} s: "
                              + "; ".join(f"{n}: {', '.join(t)}" for n, t in left.items()),
                              "read swarm-tasks.txt (a placement constraint may leave them nowhere else to "
                              "run), fix it and deploy again; the nodes stay in the swarm meanwhile")
        sleep(poll)
    for service, replicas in sorted(scaled.items()):
        leader.run(scale_command(service, replicas), f"scaling {service} back to {replicas}", hint=HINT)
    settle()
    removed = []
    for node in leaving:
        if node.name not in ids:
            continue
        if node.target is not None and node.target.connected:
            node.target.run(leave_command(), check=False, timeout=60)
        leader.run(remove_command(ids[node.name]), f"removing {node.name} from the swarm", hint=HINT)
        removed.append(node.name)
        on_event(f"{node.name} left the swarm")
    return removed


# --- a stack's rollout --------------------------------------------------------------------------
IN_PROGRESS = {"updating", "rollback_started"}
ROLLED_BACK = {"rollback_completed", "rollback_paused", "paused"}


@dataclass(frozen=True)
class ServiceRollout:
    name: str
    running: int
    desired: int
    update_state: str            # "" when the service was not updated since `since`
    message: str = ""

    @property
    def settled(self) -> bool:
        # exactly: after a scale-down the extra tasks still running have not stopped yet
        return self.running == self.desired and self.update_state not in IN_PROGRESS


class RolloutFailed(RemoteError):
    """Swarm rolled a service back (its new tasks failed their healthcheck), or it never settled."""

    def __init__(self, message: str, hint: str, services: dict[str, ServiceRollout]) -> None:
        super().__init__(message, hint)
        self.services = services


def clock_command() -> str:
    return "date -u +%Y-%m-%dT%H:%M:%S.%NZ"


def inspect_command(services: Sequence[str]) -> str:
    # One line per service: name, then its UpdateStatus (null when never updated).
    return ("docker service inspect --format '{{.Spec.Name}} {{json .UpdateStatus}}' "
            + " ".join(shlex.quote(s) for s in services))


def parse_replicas(text: str) -> tuple[int, int]:
    """`docker service ls`'s Replicas column: "2/3", "1/1 (max 1 per node)", "0/0"."""
    running, _, rest = text.strip().partition("/")
    desired = rest.split()[0] if rest.split() else "0"
    return int(running or 0), int(desired or 0)


def parse_update_status(line: str, since: str) -> tuple[str, str, str]:
    """(service, state, message) from one `inspect_command` line; the state is "" when the last
    update started before ``since`` (an earlier deploy's outcome is not this one's)."""
    name, _, raw = line.strip().partition(" ")
    status = json.loads(raw or "null") or {}
    started = str(status.get("StartedAt") or "")
    if not status or _instant(started) < _instant(since):
        return name, "", ""
    return name, str(status.get("State") or ""), str(status.get("Message") or "")


def _instant(stamp: str) -> str:
    """An RFC 3339 UTC time as a string that sorts in time order: Docker trims the trailing zeros
    of the nanoseconds, so the fraction is padded to nine digits."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{whole}.{fraction[:9]:0<9}"


def rollout_state(target: Host, stack: str, since: str) -> dict[str, ServiceRollout]:
    listed = json_lines(target.run(f"{services_command()} --filter label=com.docker.stack.namespace={shlex.quote(stack)}",
                                   "listing the stack's services", hint=HINT).stdout)
    names = [row["Name"] for row in listed]
    updates: dict[str, tuple[str, str]] = {}
    if names:
        out = target.run(inspect_command(names), "reading the services' update status", hint=HINT).stdout
        for line in out.splitlines():
            if line.strip():
                name, state, message = parse_update_status(line, since)
                updates[name] = (state, message)
    out: dict[str, ServiceRollout] = {}
    for row in listed:
        running, desired = parse_replicas(str(row.get("Replicas") or "0/0"))
        state, message = updates.get(row["Name"], ("", ""))
        out[row["Name"]] = ServiceRollout(row["Name"], running, desired, state, message)
    return out


def wait_rollout(target: Host, stack: str, since: str, timeout: float, poll: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[dict[str, ServiceRollout]], None] = lambda _s: None) -> dict[str, ServiceRollout]:
    """Until every service of ``stack`` runs its replicas and no update is in progress. A service
    Swarm rolled back (its new tasks failed) is a RolloutFailed naming it: the old tasks serve."""
    deadline = clock() + timeout
    last: dict[str, ServiceRollout] = {}
    while True:
        states = rollout_state(target, stack, since)
        if states != last:
            on_change(states)
            last = states
        rolled = [s for s in states.values() if s.update_state in ROLLED_BACK]
        if rolled and all(s.settled for s in states.values()):
            names = ", ".join(sorted(s.name for s in rolled))
            why = "; ".join(f"{s.name}: {s.message}" for s in rolled if s.message)
            raise RolloutFailed(f"Swarm rolled back {names}: the new tasks did not stay healthy ({why or 'no message'}); "
                                "the previous version serves", f"read `docker service ps {stack}_<service> --no-trunc` "
                                "(collected as swarm-tasks.txt) and the service's logs, fix it and deploy again", states)
        if states and all(s.settled for s in states.values()):
            return states
        if clock() >= deadline:
            waiting = ", ".join(f"{s.name} {s.running}/{s.desired}{' ' + s.update_state if s.update_state else ''}"
                                for s in sorted(states.values(), key=lambda s: s.name) if not s.settled)
            raise RolloutFailed(f"the stack {stack} did not settle within {timeout:g} s (waiting for {waiting or 'services'})",
                                "read swarm-tasks.txt in the run folder (why tasks do not start: image pull, "
                                "placement, healthcheck), or raise WAIT_TIMEOUT", states)
        sleep(poll)
