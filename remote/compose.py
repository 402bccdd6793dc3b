"""Bring the stack up on the droplet with docker compose, and explain failures.

``build`` a release's images beside the running ones -> ``up -d --wait`` -> ``ps --format json``.
Recreated containers and rebuilt images are found by comparing ids before and
after, so the caller can report what an update really touched. Volumes are never
removed here (no ``down -v``): update-only deploys keep their data.
"""
from __future__ import annotations

import json
import posixpath
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from remote import commands as cmd
from remote.errors import RemoteError
from remote.layout import RELEASE_ENV, RELEASE_IMAGES, ReleaseLayout
from remote.host import Result, Host


@dataclass(frozen=True)
class ComposeSpec:
    """How the stack runs on a target: compose runs in <base>/current, with that release's env
    file and its image pins (compose.release.yml)."""

    project: str
    compose_files: tuple[str, ...] = ("compose.yml",)   # relative to the release folder
    wait_timeout: int = 180
    build_timeout: int | None = 1800
    log_tail: int = 200

    def on(self, layout: ReleaseLayout) -> cmd.ComposeProject:
        """The live release. A fixed --project-directory (the ``current`` link) keeps the config
        hash of an unchanged service stable across releases, so it is not recreated."""
        return self._in(layout.current)

    def for_release(self, layout: ReleaseLayout, release_id: str) -> cmd.ComposeProject:
        """A release that is not live (yet): its images are built from its own folder."""
        return self._in(layout.release(release_id))

    def _in(self, folder: str) -> cmd.ComposeProject:
        files = (*self.compose_files, RELEASE_IMAGES)
        return cmd.ComposeProject(project=self.project, compose_files=tuple(posixpath.join(folder, f) for f in files),
                                 env_file=posixpath.join(folder, RELEASE_ENV), project_directory=folder)


@dataclass(frozen=True)
class ServiceState:
    name: str
    state: str          # running, exited, created, ...
    health: str         # healthy, unhealthy, starting, or "" without a healthcheck
    status: str         # docker's human text, e.g. "Up 3 minutes (healthy)"
    container_id: str
    image_id: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "running" and self.health in ("", "healthy")


@dataclass(frozen=True)
class UpResult:
    services: dict[str, ServiceState]
    recreated: list[str]        # services whose container id changed (or is new)
    rebuilt: list[str]          # services whose image id changed (or is new)
    output: str = field(default="", repr=False)
    replaced: list[str] = field(default_factory=list)   # replaced start-first, new beside old


DISK_FULL = "no space left on device"
DISK_FULL_HINT = ("free space on the droplet: `docker system prune` removes unused images and build cache, a "
                  "lower RELEASES_KEEP keeps fewer releases, a higher MIN_FREE_MB refuses a deploy up front "
                  "when there is too little room; then deploy again")


class ComposeError(RemoteError):
    """A service failed to build or become healthy; ``diagnostics`` maps file name -> text.

    Diagnostics may contain secrets printed by the services: the caller passes them
    through the redactor when writing the run folder.
    """

    def __init__(self, service: str, reason: str, diagnostics: dict[str, str],
                 hint: str = "") -> None:
        self.service = service
        self.reason = reason
        self.diagnostics = diagnostics
        super().__init__(f"service {service}: {reason}",
                         hint or (f"read logs-{service}.txt and health-{service}.json in the run "
                                  f"folder; fix the service and run `inv deploy --update-only`"))


# --- parsing (pure) ---------------------------------------------------------------------

def parse_ps_json(text: str) -> list[dict]:
    """``compose ps --format json``: a JSON array (older compose) or one object per line."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def states_from_ps(rows: Iterable[dict]) -> dict[str, ServiceState]:
    out: dict[str, ServiceState] = {}
    for row in rows:
        name = row.get("Service") or row.get("Name", "")
        out[name] = ServiceState(name=name, state=str(row.get("State", "")).lower(),
                                 health=str(row.get("Health", "") or "").lower(),
                                 status=str(row.get("Status", "")), container_id=str(row.get("ID", "")))
    return out


def failing_services(states: dict[str, ServiceState]) -> list[tuple[str, str]]:
    """(service, reason) for every service that is not ok, root causes first.

    A service stuck in "created" usually waits on an unhealthy dependency, so it
    is listed after the unhealthy/exited ones.
    """
    rank = {"unhealthy": 0, "exited": 1, "dead": 1, "restarting": 2, "starting": 3}
    found = []
    for s in states.values():
        if s.ok:
            continue
        if s.health == "unhealthy":
            key, why = "unhealthy", f"unhealthy ({s.status})"
        elif s.state in ("exited", "dead"):
            key, why = "exited", f"exited ({s.status})"
        elif s.state == "restarting":
            key, why = "restarting", f"keeps restarting ({s.status})"
        elif s.health == "starting":
            key, why = "starting", f"not healthy before the wait timeout ({s.status})"
        else:
            key, why = "created", f"not started: {s.state or 'unknown state'} ({s.status})"
        found.append((rank.get(key, 4), s.name, why))
    return [(name, why) for _, name, why in sorted(found)]


_BUILD_EVENT = re.compile(r"^\s*Image (\S+) (Building|Built)\s*$", re.M)


def unfinished_build_images(output: str) -> list[str]:
    """Images whose build started but never finished, from compose's progress lines."""
    started: list[str] = []
    done: set[str] = set()
    for image, event in _BUILD_EVENT.findall(output):
        if event == "Building" and image not in started:
            started.append(image)
        elif event == "Built":
            done.add(image)
    return [i for i in started if i not in done]


def failed_build_image(output: str) -> str | None:
    """The image whose build failed, when the progress lines tell: the only one unfinished.
    Compose cancels the builds still running when one fails, so often they do not."""
    pending = unfinished_build_images(output)
    return pending[0] if len(pending) == 1 else None


def build_images(config: dict, project: str) -> dict[str, str]:
    """image name -> service, for services that have a build section."""
    out = {}
    for name, svc in (config.get("services") or {}).items():
        if svc and svc.get("build") is not None:
            out[svc.get("image") or f"{project}-{name}"] = name
    return out


# --- remote ---------------------------------------------------------------------------

def _run(target: Host, command: str, timeout: float | None = None) -> Result:
    return target.run(command, check=False, timeout=timeout)


def snapshot(target: Host, spec: ComposeSpec) -> dict[str, ServiceState]:
    """Current service states with full container and image ids."""
    t = spec.on(target.layout)
    res = _run(target, cmd.ps(t, json=True))
    if res.exited != 0:
        return {}
    states = states_from_ps(parse_ps_json(res.stdout))
    if not states:
        return states
    res = _run(target, cmd.inspect_containers(s.container_id for s in states.values()))
    ids = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            ids[parts[2]] = (parts[0], parts[1])
    return {name: ServiceState(s.name, s.state, s.health, s.status,
                               ids.get(name, (s.container_id, ""))[0], ids.get(name, ("", ""))[1])
            for name, s in states.items()}


def diagnostics(target: Host, spec: ComposeSpec, services: Iterable[str],
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """compose ps, plus logs (bounded tail) and healthcheck output of the given services."""
    t = spec.on(target.layout)
    out = dict(extra or {})
    out["compose-ps.txt"] = _run(target, cmd.ps(t)).output
    states = snapshot(target, spec)
    for name in services:
        out[f"logs-{name}.txt"] = _run(target, cmd.logs(t, name, tail=spec.log_tail)).output
        if name in states and states[name].container_id:
            out[f"health-{name}.json"] = _run(target, cmd.health(states[name].container_id)).output
    return out


def _build_config(target: Host, t: cmd.ComposeProject) -> dict:
    # Parsed in memory only: the resolved config may contain interpolated secrets.
    res = _run(target, cmd.config(t, json=True))
    try:
        return json.loads(res.stdout) if res.exited == 0 else {}
    except json.JSONDecodeError:
        return {}


def build(target: Host, spec: ComposeSpec, release_id: str, services: set[str]) -> str:
    """Build ``services`` of a release that is not live: the running containers are untouched."""
    if not services:
        return ""
    t = spec.for_release(target.layout, release_id)
    res = _run(target, cmd.build(t, services), timeout=spec.build_timeout)
    text = res.output
    if res.exited == 0:
        return text
    images = build_images(_build_config(target, t), spec.project)
    timed_out = res.exited is None or (spec.build_timeout and "timed out" in text.lower())
    disk_full = DISK_FULL in text.lower()
    logs = {"compose-build.txt": text}
    image = failed_build_image(text)
    service = images.get(image) if image else None
    if service is None and not (timed_out or disk_full):
        service = _isolate_failed_build(target, t, spec, services, images, text, logs)
    if service is None:
        candidates = sorted(services)
        service = candidates[0] if len(candidates) == 1 else ", ".join(candidates)
    reason = (f"image build did not finish within {spec.build_timeout} s" if timed_out
              else "image build failed")
    log = f"compose-build-{service}.txt" if f"compose-build-{service}.txt" in logs else "compose-build.txt"
    hint = (f"read {log} in the run folder (the failing Dockerfile "
            "step is near its end); fix it and deploy again")
    if disk_full:   # not the Dockerfile's fault: say so, and how to make room
        reason += f": the droplet's disk is full ({DISK_FULL})"
        hint = DISK_FULL_HINT
    raise ComposeError(service, reason, diagnostics(target, spec, [], logs), hint=hint)


def _isolate_failed_build(target: Host, t: cmd.ComposeProject, spec: ComposeSpec, services: set[str],
                          images: dict[str, str], output: str, logs: dict[str, str]) -> str | None:
    """Several builds were cut short together: build each unfinished one alone (what finished is
    cached) until one fails, so the error names that service, its log in compose-build-<name>.txt."""
    unfinished = [images[i] for i in unfinished_build_images(output) if images.get(i) in services]
    if len(services) < 2 or not unfinished:
        return None
    for name in sorted(unfinished):
        alone = _run(target, cmd.build(t, {name}), timeout=spec.build_timeout)
        if not alone.ok:
            logs[f"compose-build-{name}.txt"] = alone.output
            return name
    return None


def up(target: Host, spec: ComposeSpec, services_to_recreate: Iterable[str] = ()) -> UpResult:
    """Start the live release's images (never builds) and wait until every service is healthy.

    ``services_to_recreate`` are recreated even when compose sees no change (their bind-mounted
    files changed in the new release; see sync.services_for_mounts)."""
    t = spec.on(target.layout)
    before = snapshot(target, spec)
    log = []
    res = _run(target, cmd.up(t, spec.wait_timeout), timeout=spec.wait_timeout + 300)
    log.append(res.output)
    if res.exited == 0 and services_to_recreate:
        res = _run(target, cmd.up(t, spec.wait_timeout, services=services_to_recreate, no_deps=True,
                                force_recreate=True), timeout=spec.wait_timeout + 300)
        log.append(res.output)
    after = snapshot(target, spec)
    failing = failing_services(after)
    if res.exited != 0 or failing:
        if not failing:
            last = res.output.strip().splitlines()
            raise ComposeError("compose", f"up failed: {last[-1] if last else 'exit status ' + str(res.exited)}",
                               diagnostics(target, spec, [], {"compose-up.txt": res.output}),
                               hint="read compose-up.txt in the run folder")
        names = [n for n, _ in failing]
        raise ComposeError(names[0], failing[0][1],
                           diagnostics(target, spec, names, {"compose-up.txt": res.output}))
    recreated = sorted(n for n, s in after.items()
                       if n not in before or before[n].container_id != s.container_id)
    rebuilt = sorted(n for n, s in after.items()
                     if n not in before or (s.image_id and before[n].image_id != s.image_id))
    return UpResult(services=after, recreated=recreated, rebuilt=rebuilt, output="".join(log))


def force_recreate(target: Host, spec: ComposeSpec, services: Iterable[str]) -> dict[str, ServiceState]:
    """Recreate ``services`` with the images the live release names; the new states."""
    t = spec.on(target.layout)
    _run(target, cmd.up(t, spec.wait_timeout, services=services, no_deps=True, force_recreate=True),
         timeout=spec.wait_timeout + 300)
    return snapshot(target, spec)


MIGRATE_KEY = "x-release-migrate"


def migration(compose_file: dict) -> tuple[str, list[str]] | None:
    """The stack's one-off migration (``x-release-migrate: {service, command}`` in compose.yml)."""
    spec = compose_file.get(MIGRATE_KEY) or {}
    if not spec.get("service") or not spec.get("command"):
        return None
    return str(spec["service"]), [str(a) for a in spec["command"]]


def migrate(target: Host, spec: ComposeSpec, release_id: str, service: str, argv: list[str]) -> str:
    """Run a release's migration once, with its image and env, while the live release serves."""
    res = _run(target, cmd.run_once(spec.for_release(target.layout, release_id), service, argv),
               timeout=spec.wait_timeout + 300)
    if not res.ok:
        raise ComposeError(service, f"the migration ({' '.join(argv)}) failed: {res.tail()}", {"migrate.txt": res.output},
                           hint="read migrate.txt in the run folder; migrations must stay compatible with the "
                                "release that is serving (expand first, contract a release later)")
    return res.output


# --- zero-downtime cutover (start-first) -------------------------------------------------

START_FIRST = "start-first"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def update_order(definition: dict) -> str:
    """A service's ``deploy.update_config.order`` (Swarm's key; plain compose ignores it):
    start-first services get their new container beside the old one."""
    return str(((definition.get("deploy") or {}).get("update_config") or {}).get("order") or "stop-first")


def grace_seconds(definition: dict, default: int = 10) -> int:
    """``stop_grace_period`` in seconds (``1m30s``, ``45s``, or nanoseconds as compose's JSON has it)."""
    value = definition.get("stop_grace_period")
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return max(1, int(value / 1e9)) if value > 10_000 else int(value)
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = sum(float(n) * factor[u] for n, u in _DURATION.findall(str(value)))
    return max(1, round(total)) if total else default


def rolling_order(config: dict) -> list[str]:
    """Start-first services, dependencies first (django before the api that calls it)."""
    services = config.get("services") or {}
    rolling = {n for n, d in services.items() if update_order(d or {}) == START_FIRST}
    ordered: list[str] = []

    def visit(name: str, seen: tuple[str, ...] = ()) -> None:
        if name in ordered or name in seen:
            return
        deps = (services.get(name) or {}).get("depends_on") or {}
        for dep in sorted(deps if isinstance(deps, (dict, list)) else []):
            visit(dep, seen + (name,))
        if name in rolling:
            ordered.append(name)

    for name in sorted(services):
        visit(name)
    return ordered


def _ids(target: Host, project: str, service: str) -> list[str]:
    return target.run(cmd.service_containers(project, service), f"listing {service} containers").stdout.split()


def _hashes(target: Host, t: cmd.ComposeProject) -> dict[str, str]:
    out = _run(target, cmd.config_hashes(t)).stdout
    return dict(line.split(None, 1) for line in out.splitlines() if len(line.split()) == 2)


def _wait_healthy(target: Host, container: str, timeout: float, poll: float,
                  sleep: Callable[[float], None]) -> str | None:
    """None once the container is healthy (or running without a healthcheck); else why not."""
    deadline = time.monotonic() + timeout
    status = "unknown"
    while True:
        status = _run(target, cmd.health_status(container)).stdout.strip() or "gone"
        if status in ("running healthy", "running none"):
            return None
        if not status.startswith(("running", "created")) or status.endswith("unhealthy"):
            return status
        if time.monotonic() >= deadline:
            return f"{status} after {timeout:g} s"
        sleep(poll)


def replace(target: Host, spec: ComposeSpec, service: str, grace: int, health_timeout: float,
            poll: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> str:
    """Start-first replacement of one service: a new container beside the old one(s), healthy
    before the old ones get SIGTERM and ``grace`` seconds to finish what they serve. Until then
    both answer on the service's name (Traefik and the API dial the next address when one
    refuses). If the new one never becomes healthy it is removed and the old ones serve on."""
    t = spec.on(target.layout)
    old = _ids(target, spec.project, service)
    res = _run(target, cmd.scale_up(t, service, len(old) + 1), timeout=health_timeout + 120)
    new = [c for c in _ids(target, spec.project, service) if c not in old]
    if not res.ok or len(new) != 1:
        target.run(cmd.remove_now(new), "removing the new container", check=False)
        raise ComposeError(service, f"could not start a new container beside the old one ({res.tail()})",
                           {"compose-scale.txt": res.output}, hint="read compose-scale.txt in the run folder")
    why = _wait_healthy(target, new[0], health_timeout, poll, sleep)
    if why is not None:
        diag = {f"logs-{service}-new.txt": _run(target, cmd.container_logs(new[0], spec.log_tail)).output,
                f"health-{service}-new.json": _run(target, cmd.health(new[0])).output}
        target.run(cmd.remove_now(new), "removing the unhealthy new container", check=False)
        raise ComposeError(service, f"the new container did not become healthy ({why}); the old one kept serving",
                           diag, hint=f"read logs-{service}-new.txt and health-{service}-new.json in the run folder; "
                                      "fix the service and deploy again")
    target.run(cmd.stop_and_remove(old, grace), f"stopping the old {service} container", timeout=grace + 60)
    return new[0]


def _remove_strays(target: Host, spec: ComposeSpec, services: Iterable[str], wanted: dict[str, str]) -> None:
    """A start-first replacement cut short (Ctrl-C, lost SSH) can leave a second container of a
    service running beside the first. Where one of them matches the config, the others go."""
    for name in services:
        ids = _ids(target, spec.project, name)
        if len(ids) < 2:
            continue
        labels = {c: _run(target, cmd.container_config_hash(c)).stdout.strip() for c in ids}
        if any(label == wanted.get(name) for label in labels.values()):
            strays = [c for c, label in labels.items() if label != wanted.get(name)]
            target.run(cmd.stop_and_remove(strays, 10), f"removing a stray {name} container", timeout=120)


def in_place(target: Host, spec: ComposeSpec, services_to_recreate: Iterable[str] = ()) -> list[str]:
    """Running services that the live release's config will recreate stop-first (the old container
    stops before the new one starts): what a deploy must announce before it begins."""
    before = snapshot(target, spec)
    t = spec.on(target.layout)
    config = _build_config(target, t)
    wanted = _hashes(target, t)
    rolling = set(rolling_order(config))
    out = []
    for name, state in sorted(before.items()):
        if name in rolling and name not in services_to_recreate or state.state != "running":
            continue
        label = _run(target, cmd.container_config_hash(state.container_id)).stdout.strip()
        if name in services_to_recreate or (label and wanted.get(name) and label != wanted[name]):
            out.append(name)
    return out


def cutover(target: Host, spec: ComposeSpec, services_to_recreate: Iterable[str] = (),
            poll: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> UpResult:
    """Bring the live release up with no dropped request where the stack allows it: every
    start-first service whose config changed is replaced new-beside-old, dependencies first; then
    ``up`` handles the rest (stop-first services such as beat, never twice; PostgreSQL, Redis and
    Traefik only when their own definition changed). With nothing running yet it is a plain up."""
    before = snapshot(target, spec)
    if not any(s.state == "running" for s in before.values()):
        return up(target, spec, services_to_recreate)
    t = spec.on(target.layout)
    config = _build_config(target, t)
    wanted = _hashes(target, t)
    services = config.get("services") or {}
    _remove_strays(target, spec, rolling_order(config), wanted)
    before = snapshot(target, spec)
    replaced: list[str] = []
    for name in rolling_order(config):
        current = before.get(name)
        if current is None or current.state != "running" or name in services_to_recreate:
            continue
        label = _run(target, cmd.container_config_hash(current.container_id)).stdout.strip()
        if label and wanted.get(name) and label != wanted[name]:
            replace(target, spec, name, grace_seconds(services.get(name) or {}), spec.wait_timeout, poll, sleep)
            replaced.append(name)
    rest = up(target, spec, services_to_recreate)
    after = rest.services
    recreated = sorted(n for n, s in after.items() if n not in before or before[n].container_id != s.container_id)
    rebuilt = sorted(n for n, s in after.items()
                     if n not in before or (s.image_id and before[n].image_id != s.image_id))
    return UpResult(services=after, recreated=recreated, rebuilt=rebuilt, output=rest.output, replaced=replaced)
