"""Remote state -> artifacts (FR-008). Each item stands alone: when one fails, the attempted
command and its error are written in its place and the others still run. Every byte goes
through the artifact writer, so through the redactor."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from remote import commands as cmd
from remote import compose, cutover, status, swarm
from remote.compose import ComposeSpec
from remote.host import Host

TRAEFIK_SERVICE = "traefik"
TRAEFIK_STATIC = "/etc/traefik/traefik.yml"
TRAEFIK_DYNAMIC = "/etc/traefik/dynamic/dynamic.yml"   # remote/edge_config.py
TRAEFIK_API_PORT = 8080
LOG_TAIL = 500


@dataclass(frozen=True)
class CollectSpec:
    compose: ComposeSpec
    domain: str
    edge_network: str
    command_timeout: float = 60


@dataclass
class CollectResult:
    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    services: list[dict[str, Any]] = field(default_factory=list)
    current_release: str | None = None
    # Why the services could not be listed (None: they were). An empty ``services`` then says
    # nothing about what runs, and verify must not read it as "nothing is down".
    unread: str | None = None


def _item(target: Host, result: CollectResult, write: Callable[[str, str], Any], timeout: float,
          name: str, command: str, transform: Callable[[str], str] = lambda s: s) -> str | None:
    """One collection item: its output (``transform``ed) as its artifact, or its error written
    in its place and kept in ``result.failed``; every item stands alone."""
    path = f"{target.artifact_prefix}{name}"
    try:
        res = target.run(command, check=False, timeout=timeout)
        if not res.ok:
            raise RuntimeError(f"exit {res.exited}: {(res.stderr or res.stdout).strip()[-2000:]}")
        text = transform(res.stdout)
    except Exception as exc:  # noqa: BLE001 - each item stands alone, its error is its artifact
        result.failed[name] = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        write(path, f"# collection failed\n# command: {command}\n# error: {exc}\n")
        return None
    write(path, text)
    result.written.append(path)
    return text


def parse_containers(output: str) -> list[dict[str, Any]]:
    """remote/status.py's CONTAINER_FORMAT lines -> one row per container, by service then name
    (read as `inv status` reads them: a line that is not one, a docker warning, is left out)."""
    rows = status.json_rows(output)
    out = [
        {
            "service": r.get("service") or "",
            "container": str(r.get("container") or "").lstrip("/"),
            "id": r.get("id") or "",
            "state": r.get("state") or "",
            "health": r.get("health") or "",
            "status": status.container_status(r),
            "image": r.get("image") or "",
            "started": r.get("started") or "",
            "restarts": int(r.get("restarts") or 0),
            "number": status.container_number(r),
        }
        for r in rows
    ]
    return sorted(out, key=lambda r: (r["service"], r["container"]))


def containers_table(services: list[dict[str, Any]]) -> str:
    """compose-ps.txt: the rows of compose-ps.json as an aligned table."""
    head = ("SERVICE", "CONTAINER", "STATUS", "RESTARTS", "STARTED", "IMAGE")
    lines = [head] + [(s["service"], s["container"], s["status"], str(s["restarts"]), s["started"], s["image"])
                      for s in services]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "".join("  ".join([*(c.ljust(w) for c, w in zip(line, widths)), line[-1]]).rstrip() + "\n"
                   for line in lines)


def env_lines(docker_env_json: str) -> str:
    """A container's env as KEY=value lines (the writer's redactor masks secret keys)."""
    values = json.loads(docker_env_json or "[]") or []
    return "\n".join(sorted(values)) + "\n"


def split_envs(output: str) -> dict[str, str]:
    """commands.containers_env's output: container id -> its env as JSON."""
    out = {}
    for line in output.splitlines():
        container, _, env = line.partition(" ")
        if container and env:
            out[container] = env
    return out


COLLECT_THREADS = 5     # as many as a Host opens channels at once (remote/host.MAX_CHANNELS)


def _probe_starting(target: Host, services: list[dict[str, Any]], ready: frozenset[str] = frozenset()) -> None:
    """A container Docker still calls "starting" (just replaced: its first check is up to an
    interval away) whose own healthcheck passes now counts as healthy; ``probed`` says so. One the
    cutover saw pass it moments ago (``ready``) is not probed again ("probed": "cutover"): in a
    rollback that was five probes more on a droplet busy starting them."""
    starting = [s for s in services if s.get("state") == "running" and s.get("health") == "starting" and s.get("id")]
    known = [s for s in starting if any(compose.same_container(s["id"], c) for c in ready)]
    for s in known:
        s["health"], s["probed"] = "healthy", "cutover"
    ask = [s["id"] for s in starting if s not in known]
    answering = cutover.answering_now(target, ask) if ask else set()
    for s in services:
        if s.get("id") in answering:
            s["health"], s["probed"] = "healthy", True


def collect(target: Host, spec: CollectSpec, write: Callable[[str, str], Any],
            thread_init: Callable[[], None] | None = None, ready: frozenset[str] = frozenset()) -> CollectResult:
    """Run every collection item on ``target``; ``write(relpath, text)`` is the artifact writer.
    Files land under the target's artifact prefix (remote/, or remote/<host>/ for several).
    ``thread_init`` runs first in each of its threads (the run's step bookkeeping)."""
    result = CollectResult()

    def item(name: str, command: str, transform: Callable[[str], str] = lambda s: s) -> str | None:
        return _item(target, result, write, spec.command_timeout, name, command, transform)

    # Every item is one command on its own channel of the connection: they run side by side, in
    # two rounds (the second needs the containers the first found).
    with ThreadPoolExecutor(max_workers=COLLECT_THREADS, thread_name_prefix="collect",
                            initializer=thread_init) as pool:
        ps_json = pool.submit(item, "compose-ps.json", status.compose_containers(spec.compose.project),
                              lambda out: json.dumps(parse_containers(out), indent=2) + "\n")
        current = pool.submit(item, "current-release.txt", cmd.readlink_current(target.layout))
        for name, command in (("curl-root.txt", cmd.curl_headers(spec.domain, "/")),
                              ("curl-api-health.txt", cmd.curl_headers(spec.domain, "/api/health")),
                              ("docker-df.txt", cmd.docker_system_df()),
                              ("memory.txt", cmd.free_m()),
                              ("host.txt", "uname -a; uptime; df -h /")):
            pool.submit(item, name, command)
        if ps_json.result():
            result.services = json.loads(ps_json.result())
            write(f"{target.artifact_prefix}compose-ps.txt", containers_table(result.services))
            result.written.append(f"{target.artifact_prefix}compose-ps.txt")
            pool.submit(_probe_starting, target, result.services, ready)   # its failure leaves "starting" said
        else:
            result.unread = result.failed.get("compose-ps.json", "no containers read")
            result.failed["compose-ps.txt"] = result.unread
            write(f"{target.artifact_prefix}compose-ps.txt", "# collection failed\n# error: the containers could "
                                                             "not be read (see compose-ps.json)\n")
        # The second round reads containers by name with plain docker commands: each `compose`
        # command loads the whole project first, which on a busy droplet costs more than the read.
        traefik_id = _container_of(result.services, TRAEFIK_SERVICE)
        traefik_items = ("traefik-static.yml", "dynamic.yml", "traefik-logs.txt", "traefik-rawdata.json")
        if traefik_id:
            pool.submit(item, "traefik-static.yml", cmd.container_cat(traefik_id, TRAEFIK_STATIC))
            pool.submit(item, "dynamic.yml", cmd.container_cat(traefik_id, TRAEFIK_DYNAMIC))
            pool.submit(item, "traefik-logs.txt", cmd.container_logs(traefik_id, LOG_TAIL))
            pool.submit(item, "traefik-rawdata.json", cmd.traefik_api_get(traefik_id, "/api/rawdata", TRAEFIK_API_PORT),
                        lambda raw: _pretty_json(cmd.http_body(raw)))
        else:
            for name in traefik_items:
                write(f"{target.artifact_prefix}{name}", _not_running(result, name))
        envs = pool.submit(_envs, target, result.services, spec.command_timeout)
    # Like every item, the environments stand alone: a failed read or a malformed line is
    # written as the artifact in its place, and the others still land.
    read: dict[str, str | None | Exception]
    try:
        read = dict(envs.result())
    except Exception as exc:  # noqa: BLE001
        read = {name: exc for name in _env_names(result.services).values()}
    for name, text in read.items():
        path = f"{target.artifact_prefix}{name}"
        if text is None:
            write(path, _not_running(result, name))
            continue
        try:
            if isinstance(text, Exception):
                raise text
            write(path, env_lines(text))
            result.written.append(path)
        except Exception as exc:  # noqa: BLE001
            result.failed[name] = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            write(path, f"# collection failed\n# command: docker inspect (every container's environment)\n"
                        f"# error: {exc}\n")
    result.current_release = (current.result() or "").strip().rsplit("/", 1)[-1] or None
    result.written.sort()
    return result


def collect_swarm(leader: Host, stack: str, write: Callable[[str, str], Any], timeout: float = 60) -> CollectResult:
    """The swarm as its leader sees it: nodes (a node that is down shows as Down, it is reported,
    not a crash), services with their replicas, and every task of the stack with its error.
    ``services`` are in the compose-ps shape (service, state, health, status) so verify reads
    both alike: a service short of replicas is "degraded"."""
    result = CollectResult()

    def item(name: str, command: str) -> str | None:
        return _item(leader, result, write, timeout, name, command)

    item("swarm-nodes.json", swarm.nodes_command())
    services = item("swarm-services.json", f"{swarm.services_command()} --filter "
                                           f"label=com.docker.stack.namespace={stack}")
    if services is None:
        result.unread = result.failed["swarm-services.json"]
    item("swarm-tasks.txt", swarm.tasks_command(stack, as_json=False))
    for row in swarm.json_lines(services or ""):
        running, desired = swarm.parse_replicas(str(row.get("Replicas") or "0/0"))
        name = str(row.get("Name") or "").removeprefix(f"{stack}_")
        result.services.append({"service": name, "container": None, "image": row.get("Image"),
                                "state": "running" if running >= desired and desired else
                                ("degraded" if running else "exited"),
                                "health": "" if running >= desired else "unhealthy",
                                "status": f"{running}/{desired} replicas"})
    return result


def _env_names(services: list[dict[str, Any]]) -> dict[str, str]:
    """container id -> its environment's artifact (traefik-env.txt, env/<service>.txt), one
    container per service: the newest running one (while a release's old containers drain, the
    new one's environment is in effect, and the old one may be gone by the read). By id: Compose
    gives a removed container's name to a later one. Traefik's only while it runs."""
    def rank(svc: dict[str, Any]) -> tuple[bool, int]:
        return svc.get("state") == "running", status.container_number(svc)

    chosen: dict[str, dict[str, Any]] = {}
    for svc in services:
        if not svc.get("service") or not svc.get("id"):
            continue
        if svc["service"] == TRAEFIK_SERVICE and svc.get("state") != "running":
            continue
        if svc["service"] not in chosen or rank(svc) > rank(chosen[svc["service"]]):
            chosen[svc["service"]] = svc
    return {svc["id"]: ("traefik-env.txt" if service == TRAEFIK_SERVICE else f"env/{service}.txt")
            for service, svc in chosen.items()}


def _envs(target: Host, services: list[dict[str, Any]], timeout: float) -> dict[str, str | None]:
    """Every service's environment in one command: artifact name -> its env as JSON, None for a
    container that is gone or not running. A failed command raises (docker inspect still prints
    the containers it found when one is gone: that is not a failure)."""
    named = _env_names(services)
    found: dict[str, str] = {}
    if named:
        res = target.run(cmd.containers_env(named), check=False, timeout=timeout)
        found = split_envs(res.stdout)
        if not res.ok and not found:
            raise RuntimeError(f"exit {res.exited}: {(res.stderr or res.stdout).strip()[-2000:]}")
    out: dict[str, str | None] = {name: found.get(container) for container, name in named.items()}
    out.setdefault("traefik-env.txt", None)
    return out


def _not_running(result: CollectResult, name: str) -> str:
    """The artifact written for ``name`` when its container is not there to read."""
    what = "the traefik container is not running" if name.startswith("traefik") else "its container is gone"
    result.failed[name] = what
    return f"# collection failed\n# error: {what} (see compose-ps.txt)\n"


def _container_of(services: list[dict[str, Any]], name: str) -> str | None:
    for svc in services:
        if svc.get("service") == name and svc.get("state") == "running":
            return svc.get("container")
    return None


def _pretty_json(text: str) -> str:
    return json.dumps(json.loads(text), indent=2) + "\n"
