"""Docker Swarm over several fake droplets (NODES > 1), for tests/flows.

Each droplet of FakeCloud's cluster gets an engine of its own (SwarmEngine: a FakeDocker that
also answers the swarm's commands), and all of them share one FakeSwarm: the cluster's nodes,
services and tasks, its join tokens, the account's container registry (what was pushed) and a
clock. The commands are the exact strings remote/swarm.py, remote/swarm_release.py and
remote/registry_cmds.py send, answered in the formats their parsers read:

- `docker info --format '{{json .Swarm}}'`: LocalNodeState, NodeID, ControlAvailable, and
  Cluster.ID for managers only (a worker's `.Swarm.Cluster` is null, as Docker's).
- `docker swarm init|join-token|leave`; the join goes to the engine's API socket with curl and
  a body file (remote.swarm.join_command), which the fake reads, checks and removes.
- `docker node ls|ps|update|promote|demote|rm`, `docker service ls|inspect|scale`,
  `docker stack deploy|ps`: on a manager only (a worker answers "This node is not a swarm
  manager", as Docker does). A demotion of the last manager and the removal of a manager are
  refused, as by Docker.
- `docker tag`, `docker --config DIR push|logout`: a push needs the login file the deployer
  moved into DIR (registry_cmds.login) and the image on the engine; it is then in the registry.
- `docker --config DIR stack deploy --with-registry-auth --prune -c FILE STACK` reads the stack
  file the deployer wrote on the droplet. A service whose task spec changed is updated: its
  new tasks run, UpdateStatus "completed"; if its image was built sick (FakeDocker.unhealthy on
  the engine that built it, carried through the registry) the new tasks fail and Swarm rolls it
  back by itself: "rollback_completed", the previous spec and tasks serve. A change of replicas
  alone starts or stops tasks without an update, as in Swarm. Everything settles at once.
- the leader's clock (remote.swarm.clock_command), from the swarm's own clock, which also
  stamps UpdateStatus.StartedAt (nanoseconds trimmed of trailing zeros, as Docker prints them).

Tasks are placed as Swarm does as far as the deployer relies on it: on Ready, Active nodes that
meet the placement constraints (node.role, node.labels), spread by count, never moved once
running unless their node drains, leaves, is removed or goes down; a paused node keeps its
tasks but gets no new one.

Not modelled: overlay networks, volumes, secrets and configs of the stack file (read, not
acted on); image pulls on the nodes (an image not in the registry, or a deploy without the
registry login, makes `stack deploy` fail at once, where Swarm would accept it and reject the
tasks); a new service whose first tasks never get healthy (it would wait out HEALTH_TIMEOUT);
healthcheck timing, restart policies and rollback of more than one update; Raft quorum (a
manager that is down still counts); a node removed from the swarm without leaving keeps
believing it is in it. Knobs: ``unreachable`` (droplet names that do not answer SSH; the swarm
still sees them Ready) and ``power_off(name)`` (no SSH and Down in the swarm, its tasks moved).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from lab.fake_do import FakeDigitalOcean
from remote import swarm as remote_swarm
from remote.connection import SshError
from remote.host import Result
from tests.flows.fakes import FakeCloud, FakeDocker, FakeDroplet, is_release_migration

LEADER = "stackdeploy-1"
NOT_MANAGER = ("Error response from daemon: This node is not a swarm manager. Worker nodes can't be used to "
               "view or modify cluster state. Please run this command on a manager node or promote the current "
               "node to a manager.\n")
_ids = itertools.count(1)


def _id(kind: str) -> str:
    return hashlib.sha256(f"{kind}-{next(_ids)}".encode()).hexdigest()[:25]


@dataclass
class SwarmNode:
    id: str
    hostname: str          # the droplet's name
    addr: str              # its private (VPC) address
    manager: bool
    availability: str = "active"   # active | pause | drain
    status: str = "ready"          # ready | down
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Task:
    id: str
    service: str           # <stack>_<service>
    slot: int
    node: str              # node id
    image: str
    desired: str = "Running"
    state: str = "Running"        # Running | Shutdown | Failed
    error: str = ""


@dataclass
class Service:
    name: str
    stack: str
    spec: dict             # the stack file's service, without deploy.replicas (Swarm's task spec, roughly)
    replicas: int
    previous: dict | None = None
    update_status: dict | None = None

    @property
    def image(self) -> str:
        return str(self.spec.get("image") or "")

    @property
    def order(self) -> str:
        return str(((self.spec.get("deploy") or {}).get("update_config") or {}).get("order") or "stop-first")


@dataclass
class StackDeploy:
    stack: str
    path: str
    images: dict[str, str]          # service -> image ref, as the file has them
    config_dir: str


class Meeting:
    """The first ``parties`` arrivals wait for each other (up to ``timeout``); later ones pass."""

    def __init__(self, parties: int, timeout: float = 5.0) -> None:
        self.parties, self.timeout, self.arrived = parties, timeout, 0
        self._cond = threading.Condition()

    def arrive(self) -> bool:
        with self._cond:
            self.arrived += 1
            if self.arrived > self.parties:
                return True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self.arrived >= self.parties, self.timeout)


@dataclass
class FakeSwarm:
    cloud: FakeCloud = field(repr=False, compare=False)
    engines: dict[str, "SwarmEngine"] = field(default_factory=dict, repr=False, compare=False)   # droplet name -> its engine
    nodes: dict[str, SwarmNode] = field(default_factory=dict)          # node id -> node
    cluster_id: str = ""
    tokens: dict[str, str] = field(default_factory=dict)               # role -> join token
    services: dict[str, Service] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    registry: dict[str, str] = field(default_factory=dict)             # pushed ref -> image id
    deploys: list[StackDeploy] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)                 # droplet names without SSH
    # (droplet name, "pause" | "drain" | "active" | "label" | "promote" | "demote") -> how many
    # such updates of that node Swarm refuses as "update out of sequence": the node object moved
    # on (its own heartbeat, a role change settling) between the CLI's read of its version and
    # the update
    out_of_sequence: dict[tuple[str, str], int] = field(default_factory=dict)
    # When set: the first that many pushes each wait (up to 5 s) until all of them are in
    # flight, and a push that waited in vain fails: pushes sent one at a time never meet.
    pushes_meet: "Meeting | None" = None
    _now: datetime = field(default_factory=lambda: datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc))

    # -- the world's side ----------------------------------------------------------------------
    def engine(self, name: str) -> "SwarmEngine":
        if name not in self.engines:
            self.engines[name] = SwarmEngine(name=name, swarm=self)
        return self.engines[name]

    def connector(self, world) -> Callable:
        """World.connector for the cluster: SSH to an address reaches the droplet FakeCloud lists
        there (none: refused), with that droplet's engine."""
        def connect(ssh) -> Callable[[bool], FakeDroplet]:
            def open_(quick: bool) -> FakeDroplet:
                if world.fault is not None:
                    world.fault("connect", ssh.host)
                name = self.cloud.name_at(ssh.host)
                if name is None or name in self.unreachable:
                    raise SshError(f"cannot reach {ssh.host}:{ssh.port}: connection timed out",
                                   "check the droplet is running and the firewall allows SSH from this machine")
                droplet = SwarmDroplet(world.base, self.engine(name), host=ssh.host, fault=world.fault)
                droplet.disk_full_on = world.disk_full_on
                world.droplets.append(droplet)
                return droplet
            return open_
        return connect

    def power_off(self, name: str) -> None:
        """The droplet stops: no SSH, Down in the swarm, its tasks placed elsewhere where they may run."""
        self.unreachable.add(name)
        node = self.node_named(name)
        if node is not None:
            node.status = "down"
            self._reconcile_all()

    # -- what tests read -----------------------------------------------------------------------
    def node_named(self, name: str) -> SwarmNode | None:
        return next((n for n in self.nodes.values() if n.hostname == name), None)

    def running(self, stack: str = "stackdeploy") -> dict[str, str]:
        """service (without the stack prefix) -> the image its tasks run."""
        return {s.name.removeprefix(stack + "_"): s.image for s in self.services.values() if s.stack == stack}

    def placement(self, service: str) -> list[str]:
        """The droplet names running ``service``'s tasks (one entry per task)."""
        return sorted(self.nodes[t.node].hostname for t in self.tasks
                      if t.service == service and t.desired == "Running" and t.node in self.nodes)

    # -- the clock -----------------------------------------------------------------------------
    def tick(self) -> datetime:
        self._now += timedelta(milliseconds=250)
        return self._now

    @staticmethod
    def stamp(when: datetime, trimmed: bool) -> str:
        fraction = f"{when.microsecond:06d}000"
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + (fraction.rstrip("0") or "0" if trimmed else fraction) + "Z"

    # -- placement -----------------------------------------------------------------------------
    def _fits(self, node: SwarmNode, service: Service) -> bool:
        for rule in ((service.spec.get("deploy") or {}).get("placement") or {}).get("constraints") or []:
            key, op, value = re.match(r"\s*(\S+)\s*(==|!=)\s*(\S+)\s*$", rule).groups()
            have = ("manager" if node.manager else "worker") if key == "node.role" else (
                node.labels.get(key.removeprefix("node.labels.")) if key.startswith("node.labels.") else
                node.hostname if key == "node.hostname" else None)
            if (have == value) != (op == "=="):
                return False
        return True

    def _live(self, service: Service) -> list[Task]:
        return [t for t in self.tasks if t.service == service.name and t.desired == "Running"]

    def _stop(self, task: Task, state: str = "Shutdown", error: str = "") -> None:
        task.desired, task.state, task.error = "Shutdown", state, error

    def _reconcile(self, service: Service) -> None:
        for task in self._live(service):
            node = self.nodes.get(task.node)
            if node is None or node.status != "ready" or node.availability == "drain" or not self._fits(node, service):
                self._stop(task)
        live = sorted(self._live(service), key=lambda t: t.slot)
        for task in live[service.replicas:]:
            self._stop(task)
        live = live[:service.replicas]
        eligible = [n for n in self.nodes.values()
                    if n.status == "ready" and n.availability == "active" and self._fits(n, service)]
        used = {t.slot for t in live}
        for slot in (s for s in range(1, service.replicas + 1) if s not in used):
            if not eligible:
                break   # pending: no node may run it
            node = min(eligible, key=lambda n: sum(1 for t in self._live(service) if t.node == n.id))
            self.tasks.append(Task(_id("task"), service.name, slot, node.id, service.image))
            short = service.name.removeprefix(service.stack + "_")
            self.engine(node.hostname).log(short, f"{short} started")

    def _reconcile_all(self) -> None:
        for service in self.services.values():
            self._reconcile(service)

    def replicas(self, service: Service) -> str:
        return f"{len(self._live(service))}/{service.replicas}"

    # -- stack deploy --------------------------------------------------------------------------
    def deploy_stack(self, engine: "SwarmEngine", path: str, stack: str, config_dir: str, prune: bool,
                     command: str) -> Result:
        document = yaml.safe_load(Path(path).read_text())
        if not str(document.get("version", "")).startswith("3"):
            return Result(command, 1, "", f"unsupported Compose file version: {document.get('version')}\n")
        auths = _logins(config_dir)
        images = {name: str(d.get("image") or "") for name, d in (document.get("services") or {}).items()}
        for name, ref in images.items():
            server = ref.split("/", 1)[0] if "/" in ref and ("." in ref.split("/", 1)[0] or ":" in ref.split("/", 1)[0]) else ""
            if server and server not in auths:
                return Result(command, 1, "", f"fake swarm: no registry login for {server} in {config_dir} "
                                              "(--with-registry-auth has nothing to hand the nodes)\n")
            if server and ref not in self.registry:
                return Result(command, 1, "", f"fake swarm: {ref} is not in the registry (never pushed)\n")
        self.deploys.append(StackDeploy(stack, path, images, config_dir))
        out = []
        sick = set().union(*(e.sick_images for e in self.engines.values()))
        for name, definition in (document.get("services") or {}).items():
            full = f"{stack}_{name}"
            deploy = dict(definition.get("deploy") or {})
            replicas = int(deploy.pop("replicas", 1))
            spec = {**definition, "deploy": deploy}
            service = self.services.get(full)
            if service is None:
                service = self.services[full] = Service(full, stack, spec, replicas)
                out.append(f"Creating service {full}")
            else:
                out.append(f"Updating service {full} (id: {hashlib.sha256(full.encode()).hexdigest()[:25]})")
                service.replicas = replicas
                if spec != service.spec:
                    self._update(service, spec, self.registry.get(spec.get("image") or "", "") in sick)
            self._reconcile(service)
        if prune:
            for full in [n for n, s in self.services.items() if s.stack == stack and n.removeprefix(stack + "_")
                         not in images]:
                for task in self._live(self.services.pop(full)):
                    self._stop(task)
                out.append(f"Removing service {full}")
        return Result(command, 0, "\n".join(out) + "\n")

    def _update(self, service: Service, spec: dict, sick: bool) -> None:
        started = self.stamp(self.tick(), trimmed=True)
        if sick:   # the new tasks fail their healthcheck; failure_action rollback puts the old ones back
            for task in self._live(service)[:1]:
                self.tasks.append(Task(_id("task"), service.name, task.slot, task.node, str(spec.get("image")),
                                       desired="Shutdown", state="Failed",
                                       error="task: non-zero exit (1): dockerexec: unhealthy container"))
            service.update_status = {"State": "rollback_completed", "StartedAt": started,
                                     "CompletedAt": self.stamp(self.tick(), trimmed=True),
                                     "Message": "rollback completed"}
            return
        for task in self._live(service):
            self._stop(task)
        service.previous, service.spec = service.spec, spec
        service.update_status = {"State": "completed", "StartedAt": started,
                                 "CompletedAt": self.stamp(self.tick(), trimmed=True), "Message": "update completed"}

    def task_rows(self, tasks: list[Task]) -> list[dict]:
        rows = []
        for task in tasks:
            node = self.nodes.get(task.node)
            rows.append({"ID": task.id, "Name": f"{task.service}.{task.slot}", "Image": task.image,
                         "Node": node.hostname if node else task.node, "DesiredState": task.desired,
                         "CurrentState": f"{task.state} 2 minutes ago", "Error": task.error, "Ports": ""})
        return rows


def _environment(spec: dict) -> dict[str, str]:
    env = spec.get("environment") or {}
    return dict(e.split("=", 1) for e in env) if isinstance(env, list) else {k: str(v) for k, v in env.items()}


def _logins(config_dir: str) -> dict:
    """The registry logins in a docker client config folder on the (local) droplet."""
    path = Path(config_dir) / "config.json"
    return (json.loads(path.read_text()).get("auths") or {}) if path.is_file() else {}


@dataclass
class SwarmEngine(FakeDocker):
    """One droplet's Docker engine in a swarm: FakeDocker's compose, build and images, plus the
    swarm's commands answered from the shared FakeSwarm (see the module docstring)."""

    name: str = ""
    swarm: FakeSwarm | None = field(default=None, repr=False, compare=False)
    node_id: str = ""            # this engine's membership ("" = not in a swarm)

    @property
    def node(self) -> SwarmNode | None:
        return self.swarm.nodes.get(self.node_id) if self.node_id else None

    def _handle(self, argv: list[str], command: str) -> Result:
        config_dir = ""
        if argv[1:2] == ["--config"]:
            config_dir, argv = argv[2], ["docker", *argv[3:]]
        if argv[:2] == ["docker", "info"] and "{{json .Swarm}}" in argv:
            return Result(command, 0, json.dumps(self._info()) + "\n")
        kind = argv[1] if len(argv) > 1 else ""
        if kind == "swarm":
            return self._swarm_cmd(argv[2:], command)
        if kind in ("node", "service", "stack"):
            if self.node is None or not self.node.manager:
                return Result(command, 1, "", NOT_MANAGER)
            return getattr(self, f"_{kind}")(argv[2:], command, config_dir)
        if kind == "tag":
            if argv[2] not in self.images:
                return Result(command, 1, "", f"Error response from daemon: No such image: {argv[2]}\n")
            self.images[argv[3]] = self.images[argv[2]]
            return Result(command, 0, "")
        if kind == "push":
            ref = argv[-1]
            if self.swarm.pushes_meet is not None and not self._meet(self.swarm.pushes_meet):
                return Result(command, 1, "", f"fake swarm: {ref} was pushed alone: no other push joined it in "
                                              f"{self.swarm.pushes_meet.timeout:g} s\n")
            if ref.split("/", 1)[0] not in _logins(config_dir):
                return Result(command, 1, "", "unauthorized: authentication required\n")
            if ref not in self.images:
                return Result(command, 1, "", f"An image does not exist locally with the tag: {ref}\n")
            self.swarm.registry[ref] = self.images[ref]
            return Result(command, 0, ref + "\n")
        if kind == "logout":
            path, auths = Path(config_dir) / "config.json", _logins(config_dir)
            if argv[2] not in auths:
                return Result(command, 0, f"Not logged in to {argv[2]}\n")
            del auths[argv[2]]
            path.write_text(json.dumps({"auths": auths}))
            return Result(command, 0, f"Removing login credentials for {argv[2]}\n")
        if argv[:2] == ["docker", "run"]:       # a one-off container (remote/oneoff.py, remote/backup.py)
            image = next(a for a, before in zip(argv[2:], argv[1:]) if not a.startswith("-")
                         and before not in ("--network", "--env-file", "--entrypoint", "--user"))
            entry = argv[argv.index("--entrypoint") + 1] if "--entrypoint" in argv else None
            if entry == "pgbr":                 # the restore on the postgres service's volume
                if self.runs_database():        # pgBackRest's own refusal
                    return Result(command, 1, "", "ERROR: [038]: unable to restore while PostgreSQL is running\n")
                if not any(a.startswith("--mount=type=volume,source=stackdeploy_pgdata,") for a in argv):
                    return Result(command, 1, "", "fake swarm: the restore one-off lacks the data volume\n")
                return self.database.restore(argv[argv.index(image) + 1:], command)
            if entry == "backup-status":
                return Result(command, 0, self.database.status(server=False))
            inner = argv[argv.index(image) + 1:]
            if is_release_migration(inner):   # the release's migration
                self.migration_images.append(image)
                network = argv[argv.index("--network") + 1]
                if network != "net-internal":   # the network the database is on
                    return Result(command, 1, "", f"could not translate host name \"postgres\" ({network!r})\n")
                return self.migrate_command(inner, command)
            return self._one_off(inner, command)
        if argv[:2] == ["docker", "exec"]:      # into a task's container on this node: <service>.<slot>.<task id>
            name = next(a for a in argv[2:] if not a.startswith("-"))
            if not any(t.node == self.node_id and t.desired == "Running" and f"{t.service}.{t.slot}.{t.id}" == name
                       for t in self.swarm.tasks):
                return Result(command, 1, "", f"Error: No such container: {name}\n")
            inner = argv[argv.index(name) + 1:]
            if name.split(".")[0].endswith("_postgres") and inner[:1] in (["pgbr"], ["backup-status"]):
                return self.database.exec(inner, command)   # pgBackRest in the postgres task's container
            return self._one_off(inner, command)
        wanted = [a.split("=", 2)[2] for a in argv if a.startswith("label=com.docker.swarm.service.name=")]
        if argv[:2] == ["docker", "ps"] and "-q" in argv and wanted:   # a service's running tasks here
            return Result(command, 0, "".join(f"{t.service}.{t.slot}.{t.id}\n" for t in self.swarm.tasks
                                              if t.node == self.node_id and t.desired == "Running" and t.service in wanted))
        if argv[:2] == ["docker", "ps"] and not any(a.startswith("label=com.docker.compose") for a in argv):
            mine = [t for t in self.swarm.tasks if t.node == self.node_id]
            return Result(command, 0, "CONTAINER ID   IMAGE   STATUS   NAMES\n" + "".join(
                f"{t.id[:12]}   {t.image}   {'Up 2 minutes' if t.desired == 'Running' else 'Exited (0)'}   "
                f"{t.service}.{t.slot}.{t.id}\n" for t in mine))
        return super()._handle(argv, command)

    def runs_database(self) -> bool:
        return super().runs_database() or any(t.node == self.node_id and t.desired == "Running"
                                              and t.service.endswith("_postgres") for t in self.swarm.tasks)

    # -- docker info / swarm ---------------------------------------------------------------------
    def _info(self) -> dict:
        node = self.node
        if node is None:
            return {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                    "Error": "", "RemoteManagers": None}
        return {"NodeID": node.id, "NodeAddr": node.addr, "LocalNodeState": "active",
                "ControlAvailable": node.manager, "Error": "",
                "Cluster": {"ID": self.swarm.cluster_id} if node.manager else None}

    def _swarm_cmd(self, args: list[str], command: str) -> Result:
        s = self.swarm
        if args[0] == "init":
            if self.node is not None:
                return Result(command, 1, "", "Error response from daemon: This node is already part of a swarm. "
                                              "Use \"docker swarm leave\" to leave this swarm and join another one.\n")
            addr = args[args.index("--advertise-addr") + 1]
            s.cluster_id = _id("cluster")
            secret = _id("swarm")
            s.tokens = {role: f"SWMTKN-1-{secret}-{_id(role)}" for role in ("worker", "manager")}
            self.node_id = _id("node")
            s.nodes[self.node_id] = SwarmNode(self.node_id, self.name, addr, manager=True)
            return Result(command, 0, f"Swarm initialized: current node ({self.node_id}) is now a manager.\n")
        if args[0] == "join-token":
            if self.node is None or not self.node.manager:
                return Result(command, 1, "", NOT_MANAGER)
            return Result(command, 0, s.tokens[args[-1]] + "\n")
        if args[0] == "leave":
            node = self.node
            if node is None:
                return Result(command, 1, "", "Error response from daemon: This node is not part of a swarm\n")
            if node.manager and "--force" not in args:
                return Result(command, 1, "", "Error response from daemon: You are attempting to leave the swarm on "
                                              "a node that is participating as a manager.\n")
            node.status, self.node_id = "down", ""
            s._reconcile_all()
            return Result(command, 0, "Node left the swarm.\n")
        return Result(command, 1, "", f"fake swarm: unsupported swarm {args[0]}\n")

    def _meet(self, meeting: Meeting) -> bool:
        self._lock.release()   # dockerd answers other clients while an upload runs
        try:
            return meeting.arrive()
        finally:
            self._lock.acquire()

    def api_join(self, body: dict, command: str) -> Result:
        """POST /swarm/join on the engine's socket (curl --fail-with-body: exit 22 and the error body)."""
        s = self.swarm
        if self.node is not None:
            return Result(command, 22, json.dumps({"message": "This node is already part of a swarm."}) + "\n")
        role = next((r for r, t in s.tokens.items() if t == body.get("JoinToken")), None)
        managers = {f"{n.addr}:{remote_swarm.SWARM_PORT}" for n in s.nodes.values() if n.manager}
        if role is None:
            return Result(command, 22, json.dumps({"message": "rpc error: code = InvalidArgument desc = A valid "
                                                              "join token is necessary to join this cluster"}) + "\n")
        if not set(body.get("RemoteAddrs") or []) & managers:
            return Result(command, 22, json.dumps({"message": "Timeout was reached before node joined."}) + "\n")
        self.node_id = _id("node")
        s.nodes[self.node_id] = SwarmNode(self.node_id, self.name, str(body.get("AdvertiseAddr")),
                                          manager=role == "manager")
        s._reconcile_all()
        return Result(command, 0, "")

    # -- docker node / service / stack (managers only) ----------------------------------------
    def _find_node(self, ref: str) -> SwarmNode | None:
        return self.swarm.nodes.get(ref) or self.swarm.node_named(ref)

    def _node(self, args: list[str], command: str, _config: str) -> Result:
        s, sub = self.swarm, args[0]
        if sub == "ls":
            leader = next((n.id for n in s.nodes.values() if n.manager and n.hostname == LEADER), None) or \
                next((n.id for n in s.nodes.values() if n.manager), "")
            rows = [{"Availability": n.availability.capitalize(), "EngineVersion": "24.0.7", "Hostname": n.hostname,
                     "ID": n.id, "ManagerStatus": ("Leader" if n.id == leader else
                                                   "Unreachable" if n.status == "down" else "Reachable")
                     if n.manager else "", "Self": n.id == self.node_id, "Status": n.status.capitalize(),
                     "TLSStatus": "Ready"} for n in s.nodes.values()]
            return Result(command, 0, "".join(json.dumps(r) + "\n" for r in rows))
        node = self._find_node(args[-1])
        if node is None:
            return Result(command, 1, "", f"Error: No such node: {args[-1]}\n")
        kind = (args[args.index("--availability") + 1] if "--availability" in args else
                "label" if "--label-add" in args else sub)
        if sub in ("update", "promote", "demote") and s.out_of_sequence.get((node.hostname, kind)):
            s.out_of_sequence[(node.hostname, kind)] -= 1
            return Result(command, 1, "", "Error response from daemon: rpc error: code = Unknown "
                                          "desc = update out of sequence\n")
        if sub == "ps":
            tasks = [t for t in s.tasks if t.node == node.id
                     and ("desired-state=running" not in args or t.desired == "Running")]
            return Result(command, 0, "".join(json.dumps(r) + "\n" for r in s.task_rows(tasks)))
        if sub == "update" and "--label-add" in args:
            key, _, value = args[args.index("--label-add") + 1].partition("=")
            node.labels[key] = value
        elif sub == "update" and "--availability" in args:
            node.availability = args[args.index("--availability") + 1]
            s._reconcile_all()
        elif sub in ("promote", "demote"):
            if sub == "demote" and node.manager and sum(1 for n in s.nodes.values() if n.manager) == 1:
                return Result(command, 1, "", "Error response from daemon: rpc error: code = FailedPrecondition "
                                              "desc = attempting to demote the last manager of the swarm\n")
            node.manager = sub == "promote"
            return Result(command, 0, f"Node {node.id} {sub}d {'to a manager' if node.manager else 'to a worker'} "
                                      "in the swarm.\n")
        elif sub == "rm":
            if node.manager:
                return Result(command, 1, "", f"Error response from daemon: rpc error: code = FailedPrecondition "
                                              f"desc = node {node.id} is a cluster manager and is a member of the "
                                              "raft cluster. It must be demoted to worker before removal\n")
            if node.status == "ready" and "--force" not in args:
                return Result(command, 1, "", f"Error response from daemon: rpc error: code = FailedPrecondition "
                                              f"desc = node {node.id} is not down and can't be removed\n")
            del s.nodes[node.id]
            s._reconcile_all()
        else:
            return Result(command, 1, "", f"fake swarm: unsupported node {args}\n")
        return Result(command, 0, node.id + "\n")

    def _service(self, args: list[str], command: str, _config: str) -> Result:
        s, sub = self.swarm, args[0]
        if sub == "ls":
            stack = next((a.split("=", 2)[2] for a in args if a.startswith("label=com.docker.stack.namespace=")), None)
            rows = [{"ID": hashlib.sha256(v.name.encode()).hexdigest()[:12], "Name": v.name, "Mode": "replicated",
                     "Replicas": s.replicas(v), "Image": v.image, "Ports": ""}
                    for v in s.services.values() if stack is None or v.stack == stack]
            return Result(command, 0, "".join(json.dumps(r) + "\n" for r in rows))
        if sub == "inspect" and "--format" not in args:     # remote/oneoff.swarm_service_exists
            missing = [n for n in args[1:] if n not in s.services]
            return Result(command, 1 if missing else 0, "", f"Error: no such service: {missing[0]}\n" if missing else "")
        if sub == "inspect":
            fmt = args[args.index("--format") + 1]
            names = args[args.index("--format") + 2:]
            missing = [n for n in names if n not in s.services]
            if missing:
                return Result(command, 1, "", f"Error: no such service: {missing[0]}\n")
            if fmt.startswith("{{.Spec.Name}}"):
                return Result(command, 0, "".join(f"{n} {json.dumps(s.services[n].update_status)}\n" for n in names))
            # remote/oneoff.py's one-off: the live task spec's image, networks and env
            if ".ContainerSpec.Image" in fmt:
                return Result(command, 0, "".join(s.services[n].image + "\n" for n in names))
            if ".Networks" in fmt:   # the stack's: django on internal and dashboards, postgres on internal and backups
                nets = {"django": "net-dashboards net-internal", "postgres": "net-backups net-internal"}
                return Result(command, 0, "".join(f"{nets.get(n.removeprefix(s.services[n].stack + '_'), 'net-' + n.removeprefix(s.services[n].stack + '_'))} \n"
                                                  for n in names))
            if ".ContainerSpec.Mounts" in fmt:     # the stack file's volumes: pgdata on postgres
                return Result(command, 0, "".join(
                    "--mount=type=volume,source=stackdeploy_pgdata,target=/var/lib/postgresql/data \n"
                    if n.endswith("_postgres") else "\n" for n in names))
            if ".ContainerSpec.User" in fmt:
                return Result(command, 0, "".join("postgres\n" if n.endswith("_postgres") else "\n" for n in names))
            if ".ContainerSpec.Env" in fmt:
                return Result(command, 0, "".join(f"{k}={v}\n" for n in names
                                                  for k, v in _environment(s.services[n].spec).items()))
            return Result(command, 0, "".join(f"{s.services[n].replicas} {s.services[n].order}\n" for n in names))
        if sub == "logs":   # every task's lines, from the engine of the node it runs on
            full = args[-1]
            service = s.services.get(full)
            if service is None:
                return Result(command, 1, "", f"Error: no such service: {full}\n")
            short = full.removeprefix(service.stack + "_")
            out = []
            for task in (t for t in s.tasks if t.service == full and t.desired == "Running" and t.node in s.nodes):
                host = s.nodes[task.node].hostname
                out += [(when, f"{when} {full}.{task.slot}@{host}    | {text}")
                        for when, text in s.engine(host).service_logs.get(short, [])]
            return Result(command, 0, "".join(line + "\n" for _, line in sorted(out)))
        if sub == "ps":                        # the tasks of the services named, on every node
            names = [a for a in args[args.index("--format") + 2:]]
            rows = s.task_rows([t for t in s.tasks if t.service in names])
            return Result(command, 0, "".join(r["CurrentState"] + "\n" for r in rows))
        if sub == "scale":
            wanted = [a.partition("=") for a in args if "=" in a]
            missing = [name for name, _, _ in wanted if name not in s.services]
            if missing:
                return Result(command, 1, "", f"Error: no such service: {missing[0]}\n")
            for name, _, count in wanted:
                s.services[name].replicas = int(count)
                s._reconcile(s.services[name])
            return Result(command, 0, "".join(f"{name} scaled to {count}\n" for name, _, count in wanted))
        return Result(command, 1, "", f"fake swarm: unsupported service {sub}\n")

    def _stack(self, args: list[str], command: str, config: str) -> Result:
        s, sub = self.swarm, args[0]
        if sub == "deploy":
            return s.deploy_stack(self, args[args.index("-c") + 1], args[-1], config, "--prune" in args, command)
        if sub == "ps":
            stack = args[-1]
            tasks = [t for t in s.tasks if t.service.startswith(stack + "_")]
            rows = s.task_rows(tasks)
            if "--format" in args:
                return Result(command, 0, "".join(json.dumps(r) + "\n" for r in rows))
            return Result(command, 0, "ID  NAME  IMAGE  NODE  DESIRED STATE  CURRENT STATE  ERROR  PORTS\n" + "".join(
                f"{r['ID']}  {r['Name']}  {r['Image']}  {r['Node']}  {r['DesiredState']}  {r['CurrentState']}  "
                f"{r['Error']}\n" for r in rows))
        return Result(command, 1, "", f"fake swarm: unsupported stack {sub}\n")


_JOIN = re.compile(r"--unix-socket /var/run/docker\.sock .*--data-binary @(\S+) http://localhost/swarm/join$")


class SwarmDroplet(FakeDroplet):
    """A cluster node: FakeDroplet, plus the join through the engine's API socket (curl with the
    body in a file that the command's trap removes) and the clock answered from the swarm's."""

    docker: SwarmEngine

    def run(self, command: str, timeout: float | None = None) -> Result:
        join = _JOIN.search(command)
        if join is not None or command == remote_swarm.clock_command():
            self.commands.append(command)
            if self.fault is not None:
                self.fault("run", command)
            if join is None:
                return Result(command, 0, self.docker.swarm.stamp(self.docker.swarm.tick(), trimmed=False) + "\n")
            body_file = Path(shlex.split(join.group(1))[0])
            body = json.loads(body_file.read_text())
            body_file.unlink()           # the trap: removed whatever happens
            with self.docker._lock:
                self.docker.calls.append(["POST", "/swarm/join"])
                return self.docker.api_join(body, command)
        return super().run(command, timeout)


# -- the world ---------------------------------------------------------------------------------

@pytest.fixture
def docr() -> Iterator[FakeDigitalOcean]:
    """The DigitalOcean API's container registry paths, over HTTP: the lab's fake API (its
    requests are checked against DigitalOcean's spec in tests/fake_do). deploy/cloud/registry.py talks
    to it through DIGITALOCEAN_END_POINT exactly as to the real API."""
    api = FakeDigitalOcean("dop_v1_" + "ab12" * 16)   # the world's DIGITALOCEAN_TOKEN
    api.start()
    yield api
    api.stop()


def use_swarm(world, docr: FakeDigitalOcean, nodes: int = 3) -> FakeSwarm:
    """``world`` as a cluster of ``nodes``: FakeCloud's droplets each with an engine in one swarm,
    node 1's engine being world.docker (world.built() reads its builds)."""
    swarm = FakeSwarm(world.cloud)
    world.docker = swarm.engine(LEADER)
    world.connector = swarm.connector(world)
    world.set_env(NODES=str(nodes), DIGITALOCEAN_END_POINT=docr.base_url)
    return swarm


__all__ = ["FakeSwarm", "SwarmEngine", "SwarmDroplet", "docr", "use_swarm"]
