"""What runs on the cluster now, read from the leader in one command: the live release, each
service's containers (Compose) or tasks (Swarm) with their state, health, uptime, restarts and
image, the leader's free disk and its clock. `inv status` shows it; `inv logs` and `inv exec`
check it before they start (a service without a running container is refused).

One command, one round trip: the probe prints sections, each after a marker line, and the
parsers read them back. Pure: builders return strings, parsers read text; Host.run sends it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

import yaml

from remote.commands import q
from remote.layout import ReleaseLayout

SECTION = "@@@ section "

# One JSON object per container, from `docker inspect`: what a status row needs and no more (the
# container's env holds secrets and never leaves the droplet). Only the Go fields' names (.ID, not
# the JSON's "Id"): one unknown name makes the CLI format a plain map instead, where a container
# without a healthcheck has no .State.Health and the whole command fails.
CONTAINER_FORMAT = (
    '{"service":{{json (index .Config.Labels "com.docker.compose.service")}},"container":{{json .Name}},'
    '"state":{{json .State.Status}},"health":{{if .State.Health}}{{json .State.Health.Status}}{{else}}""{{end}},'
    '"started":{{json .State.StartedAt}},"restarts":{{.RestartCount}},"image":{{json .Config.Image}},'
    '"exit":{{.State.ExitCode}},"id":{{json .ID}},"image_id":{{json .Image}},'
    '"config_hash":{{json (index .Config.Labels "com.docker.compose.config-hash")}},'
    '"number":{{json (index .Config.Labels "com.docker.compose.container-number")}}}')


def container_status(row: dict[str, Any]) -> str:
    """A CONTAINER_FORMAT row's state in words, for artifacts and messages: "running (healthy)",
    "exited (1)"."""
    state, health = str(row.get("state") or ""), str(row.get("health") or "")
    if state in ("exited", "dead"):
        return f"{state} ({row.get('exit')})"
    return f"{state} ({health})" if health else state


def container_number(row: dict[str, Any]) -> int:
    """Compose's number of a CONTAINER_FORMAT row's container: it numbers a service's containers
    as it creates them, so the highest is the newest (0: not a Compose container)."""
    number = str(row.get("number") or "")
    return int(number) if number.isdigit() else 0


# -- the probe -------------------------------------------------------------------------------------

def _sections(parts: Sequence[tuple[str, str, bool]]) -> str:
    """(name, command, keep_errors): each command's output after its marker line, which starts
    on a line of its own even after a file without a final newline. A file that is not there is
    an empty section (2>/dev/null); docker's errors are kept (the engine down).

    The commands run at once, each into a file of its own, printed in order when all have ended:
    the probe costs its slowest part (pgBackRest asking the repository), not the sum of all."""
    starts = " ".join(f"{{ {command}; }} >\"$d/{k}\" {'2>&1' if keep else '2>/dev/null'} &"
                      for k, (_, command, keep) in enumerate(parts))
    prints = "; ".join(f"printf '\\n%s\\n' {q(SECTION + name)}; cat \"$d/{k}\""
                       for k, (name, _, _) in enumerate(parts))
    return f'd=$(mktemp -d) && {{ {starts} wait; {prints}; rm -rf "$d"; }}'


def disk_command(layout: ReleaseLayout) -> str:
    """``<fs> <total KB> <used KB> <free KB> <use%> <mount>`` of the folder the releases live in."""
    return f"df -Pk {q(layout.base)} | tail -n 1"


def backup_command(database: Sequence[str]) -> str:
    """pgBackRest's info (JSON) from the running PostgreSQL container that the ``docker ps``
    filters find; nothing when none runs on this node."""
    found = " ".join(f"--filter {q(f)}" for f in database)
    return f'c=$(docker ps -q {found} | head -n 1); [ -z "$c" ] || docker exec "$c" pgbr info --output=json'


def _common(layout: ReleaseLayout, database: Sequence[str]) -> list[tuple[str, str, bool]]:
    return [
        ("now", "date +%s", False),                          # the droplet's clock: uptimes need no clock sync
        ("current", f"readlink {q(layout.current)}", False),
        ("meta", f"cat {q(layout.current_meta)}", False),
        ("compose", f"cat {q(layout.current + '/compose.yml')}", False),  # the live release's services
        ("disk", disk_command(layout), False),
        ("backup", backup_command(database), False),
    ]


def compose_probe(layout: ReleaseLayout, project: str) -> str:
    """The status of a Compose droplet in one command (one-off containers left out)."""
    database = (f"label=com.docker.compose.project={project}", "label=com.docker.compose.service=postgres")
    return _sections([*_common(layout, database), ("containers", compose_containers(project), True)])


def compose_containers(project: str) -> str:
    """One CONTAINER_FORMAT line per container of ``project`` (one-off containers left out), read
    with plain docker commands: `docker compose ps` loads the whole project first, which on a
    busy droplet costs more than the read (0.6 s on the lab's). Fails when `docker ps` does.
    A container removed between the two (an old one whose drain ended: `docker inspect` then
    fails the whole read with "No such object") is left out: the pair is read again, and only
    the third read's error stands."""
    listing = (f"docker ps -aq --no-trunc --filter label=com.docker.compose.project={q(project)} "
               "--filter label=com.docker.compose.oneoff=False")
    inspect = f"docker inspect --format {q(CONTAINER_FORMAT)} $ids"
    return (f'(for _ in 1 2; do ids=$({listing}) || exit; [ -z "$ids" ] && exit 0; '
            f'out=$({inspect} 2>/dev/null) && {{ printf \'%s\\n\' "$out"; exit 0; }}; done; '
            f'ids=$({listing}) && {{ [ -z "$ids" ] || {inspect}; }})')


def swarm_probe(layout: ReleaseLayout, stack: str) -> str:
    """The status of a swarm from its leader in one command: nodes, services, every task."""
    return _sections([*_common(layout, (f"label=com.docker.swarm.service.name={stack}_postgres",)),
                      ("nodes", "docker node ls --format '{{json .}}'", True),
                      ("services", f"docker service ls --filter label=com.docker.stack.namespace={q(stack)} "
                                   "--format '{{json .}}'", True),
                      ("tasks", f"docker stack ps --no-trunc --format '{{{{json .}}}}' {q(stack)}", True)])


# -- the model -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Replica:
    """One container of a service (Compose) or one of its Swarm tasks."""

    service: str
    container: str            # what `docker exec` takes on its node
    node: str                 # the droplet it runs on
    state: str                # running, restarting, exited, created, dead; a task's: running, starting, failed, ...
    health: str = ""          # healthy, unhealthy, starting; "" without a healthcheck, or on a swarm
    uptime_s: float | None = None
    restarts: int = 0
    image: str = ""
    detail: str = ""          # why it stopped: an exit code, a task's error

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class ServiceState:
    name: str
    desired: int                       # 1 on Compose; the service's replicas on a swarm
    replicas: tuple[Replica, ...] = ()
    restarts: int = 0                  # Compose: restarts of its containers; Swarm: its failed tasks

    @property
    def running(self) -> list[Replica]:
        return [r for r in self.replicas if r.running]

    @property
    def health(self) -> str:
        found = {r.health for r in self.running}
        return next((h for h in ("unhealthy", "starting", "healthy") if h in found), "")

    @property
    def state(self) -> str:
        """running, degraded (fewer running than wanted), restarting, missing (no container at
        all), or the state its containers are in (exited, created, dead, failed ...)."""
        if not self.replicas:
            return "missing"
        if any(r.state == "restarting" for r in self.replicas):
            return "restarting"
        running = len(self.running)
        if not running:
            return self.replicas[0].state
        return "degraded" if running < self.desired else "running"

    @property
    def uptime_s(self) -> float | None:
        """The youngest running replica's: a restart a minute ago shows as a minute."""
        times = [r.uptime_s for r in self.running if r.uptime_s is not None]
        return min(times) if times else None

    @property
    def image(self) -> str:
        chosen = self.running or list(self.replicas)
        return chosen[0].image if chosen else ""

    @property
    def nodes(self) -> list[str]:
        return sorted({r.node for r in self.running})

    @property
    def problem(self) -> str | None:
        """Why the service is not serving as it should; None when it is (starting is not a problem)."""
        state = self.state
        if state == "running":
            return "unhealthy" if self.health == "unhealthy" else None
        if state == "degraded":
            return f"{len(self.running)} of {self.desired} running"
        if state == "missing":
            return "no container"
        detail = next((r.detail for r in self.replicas if r.detail), "")
        return state + (f" ({detail})" if detail else "")


@dataclass(frozen=True)
class Disk:
    total_kb: int
    free_kb: int


@dataclass(frozen=True)
class Snapshot:
    now: float | None                       # the leader's clock, epoch seconds
    release: str | None                     # the live release (None: nothing is live)
    release_meta: dict[str, Any]            # its .release.json (created, by, outcome, outcome_at)
    services: tuple[ServiceState, ...]      # the live release's, in its compose file's order
    disk: Disk | None
    nodes: tuple[dict[str, Any], ...] = ()  # a swarm's nodes: hostname, status, availability, manager
    last_backup: str | None = None          # when the newest backup ended (ISO 8601, UTC); None: none, or unknown
    errors: tuple[str, ...] = ()            # what could not be read (Docker not answering)

    def service(self, name: str) -> ServiceState | None:
        return next((s for s in self.services if s.name == name), None)

    def problems(self) -> list[str]:
        """What makes the stack degraded, one phrase each."""
        out = [] if self.release else ["nothing is live (no release started yet)"]
        out += [f"node {n.get('Hostname')} is {str(n.get('Status')).lower()}" for n in self.nodes
                if n.get("Status") != "Ready"]
        return out + [f"{s.name}: {s.problem}" for s in self.services if s.problem]

    def exec_target(self, service: str, prefer_node: str) -> Replica | None:
        """A running container of ``service``, on ``prefer_node`` when one runs there."""
        running = sorted((r for r in (self.service(service) or ServiceState(service, 1)).running),
                         key=lambda r: (r.node != prefer_node, r.node, r.container))
        return running[0] if running else None


# -- parsing ---------------------------------------------------------------------------------------

def split_sections(output: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(SECTION):
            current = found.setdefault(line[len(SECTION):].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in found.items()}


def _declared(compose_text: str) -> dict[str, int]:
    """service -> replicas wanted (deploy.replicas, else 1), in the compose file's order."""
    try:
        data = yaml.safe_load(compose_text) or {}
    except yaml.YAMLError:
        return {}
    services = data.get("services") if isinstance(data, dict) else None
    return {str(name): int(((d or {}).get("deploy") or {}).get("replicas") or 1)
            for name, d in (services or {}).items()}


def parse_disk(text: str) -> Disk | None:
    fields = text.split()
    if len(fields) >= 4 and fields[1].isdigit() and fields[3].isdigit():
        return Disk(total_kb=int(fields[1]), free_kb=int(fields[3]))
    return None


def parse_backup(text: str) -> str | None:
    """When the newest backup ended, from pgBackRest's info JSON; None with no backup (or no
    answer: PostgreSQL not running on this node, the repository unreachable)."""
    try:
        doc = json.loads(text, strict=False)
        stops = [b["timestamp"]["stop"] for stanza in doc for b in stanza.get("backup") or []]
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError):
        return None
    if not stops:
        return None
    return datetime.fromtimestamp(max(stops), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _common_parts(sections: dict[str, str]) -> dict[str, Any]:
    now = sections.get("now", "").strip()
    try:
        meta = json.loads(sections.get("meta") or "{}")
    except json.JSONDecodeError:
        meta = {}
    current = sections.get("current", "").strip()
    return {"now": float(now) if now.isdigit() else None,
            "release": current.rstrip("/").rsplit("/", 1)[-1] or None,
            "release_meta": {k: meta.get(k) for k in ("id", "created", "by", "outcome", "outcome_at") if k in meta},
            "disk": parse_disk(sections.get("disk", "")),
            "last_backup": parse_backup(sections.get("backup", ""))}


def _errors(name: str, text: str, parsed: int) -> list[str]:
    """The lines of a section that are not data (docker's own error), as one phrase."""
    noise = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("{")]
    return [f"{name}: {noise[-1][:300]}"] if noise and not parsed else []


def json_rows(text: str) -> list[dict[str, Any]]:
    """The JSON objects of ``text``, one a line; any other line (a docker warning) is left out."""
    rows = []
    for line in text.splitlines():
        if line.lstrip().startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _since(started: str, now: float | None) -> float | None:
    """Seconds since docker's RFC 3339 time (nanoseconds cut to what Python reads)."""
    if now is None or not started or started.startswith("0001-"):
        return None
    try:
        moment = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", started).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, now - moment.timestamp())


def parse_compose(output: str, project: str, node: str) -> Snapshot:
    """The Compose probe's output; ``node``: the droplet's name (every container runs there)."""
    sections = split_sections(output)
    common = _common_parts(sections)
    rows = json_rows(sections.get("containers", ""))
    by_service: dict[str, list[Replica]] = {}
    for row in rows:
        state = str(row.get("state") or "")
        exit_code = row.get("exit")
        by_service.setdefault(str(row.get("service") or "?"), []).append(Replica(
            service=str(row.get("service") or "?"), container=str(row.get("container") or "").lstrip("/"),
            node=node, state=state, health=str(row.get("health") or ""),
            uptime_s=_since(str(row.get("started") or ""), common["now"]) if state == "running" else None,
            restarts=int(row.get("restarts") or 0), image=str(row.get("image") or ""),
            detail=f"exit {exit_code}" if state in ("exited", "dead") and exit_code is not None else ""))
    declared = _declared(sections.get("compose", ""))
    names = list(declared) + sorted(set(by_service) - set(declared))
    services = tuple(ServiceState(name, declared.get(name, 1),
                                  tuple(sorted(by_service.get(name, []), key=lambda r: (not r.running, r.container))),
                                  restarts=sum(r.restarts for r in by_service.get(name, [])))
                     for name in names)
    return Snapshot(services=services, errors=tuple(_errors("docker", sections.get("containers", ""), len(rows))),
                    **common)


_DURATION = re.compile(r"(less than a second)|(about an?|an?|\d+)\s+(second|minute|hour|day|week|month|year)s?")
_UNIT = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400,
         "year": 365 * 86400}


def docker_ago(text: str) -> float | None:
    """Seconds in docker's human words ("2 hours ago", "About a minute ago"), roughly."""
    match = _DURATION.search(text.lower())
    if match is None:
        return None
    if match.group(1):
        return 0.0
    count = match.group(2)
    return (1 if not count.isdigit() else int(count)) * _UNIT[match.group(3)]


def parse_swarm(output: str, stack: str) -> Snapshot:
    """The Swarm probe's output. Health is Swarm's to act on (an unhealthy task is replaced):
    a service short of running tasks is what shows it; restarts are its recent failed tasks
    (Swarm keeps a few per slot)."""
    sections = split_sections(output)
    common = _common_parts(sections)
    services = json_rows(sections.get("services", ""))
    tasks = json_rows(sections.get("tasks", ""))
    nodes = json_rows(sections.get("nodes", ""))
    prefix = stack + "_"
    desired: dict[str, int] = {}
    for row in services:
        _running, _, wanted = str(row.get("Replicas") or "0/0").partition("/")
        desired[str(row.get("Name") or "").removeprefix(prefix)] = int((wanted.split() or ["0"])[0] or 0)
    current: dict[str, list[Replica]] = {}
    failed: dict[str, int] = {}
    for row in tasks:
        slot_name = str(row.get("Name") or "").replace("\\_", "").strip()      # history rows are indented
        service = slot_name.rsplit(".", 1)[0].removeprefix(prefix)
        words = str(row.get("CurrentState") or "").split()
        state = words[0].lower() if words else ""
        if row.get("DesiredState") != "Running":
            failed[service] = failed.get(service, 0) + (state in ("failed", "rejected"))
            continue
        current.setdefault(service, []).append(Replica(
            service=service, container=f"{slot_name}.{row.get('ID')}", node=str(row.get("Node") or ""),
            state=state, uptime_s=docker_ago(" ".join(words[1:])) if state == "running" else None,
            image=str(row.get("Image") or "").split("@", 1)[0], detail=str(row.get("Error") or "")))
    declared = _declared(sections.get("compose", ""))
    names = list(declared) + sorted((set(desired) | set(current)) - set(declared))
    states = tuple(ServiceState(name, desired.get(name, declared.get(name, 1)),
                                tuple(sorted(current.get(name, []), key=lambda r: (not r.running, r.node))),
                                restarts=failed.get(name, 0)) for name in names)
    errors = _errors("docker", sections.get("services", ""), len(services)) + \
        _errors("swarm nodes", sections.get("nodes", ""), len(nodes))
    return Snapshot(services=states, nodes=tuple(nodes), errors=tuple(errors), **common)
