"""Bring the stack up on the droplet with docker compose, and explain failures.

``build`` a release's images beside the running ones -> ``up -d --wait`` -> ``ps --format json``.
Recreated containers and rebuilt images are found by comparing ids before and
after, so the caller can report what an update really touched. Volumes are never
removed here (no ``down -v``): update-only deploys keep their data.
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Iterable

from remote import commands as cmd
from remote import status
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

    def for_release(self, layout: ReleaseLayout, release_id: str, env_from: str | None = None) -> cmd.ComposeProject:
        """A release that is not live (yet): its images are built from its own folder.
        ``env_from``: another release's env file instead of its own (the live one's, for a
        migration while the database still has the live release's passwords)."""
        project = self._in(layout.release(release_id))
        if env_from is None:
            return project
        return dataclasses.replace(project, env_file=layout.env_file(env_from))

    def _in(self, folder: str) -> cmd.ComposeProject:
        files = (*self.compose_files, RELEASE_IMAGES)
        return cmd.ComposeProject(project=self.project, compose_files=tuple(posixpath.join(folder, f) for f in files),
                                 env_file=posixpath.join(folder, RELEASE_ENV), project_directory=folder)


@dataclass(frozen=True)
class ServiceState:
    name: str
    state: str          # running, exited, created, ...
    health: str         # healthy, unhealthy, starting, or "" without a healthcheck
    status: str         # in words (status.container_status), e.g. "running (healthy)", "exited (1)"
    container_id: str
    image_id: str = ""
    config_hash: str = ""   # compose's label: the config the container was created with

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
    # Old containers still draining when the cutover returned (cutover's ``drain_later``).
    draining: tuple["Draining", ...] = ()
    # Containers the cutover saw answer their own healthcheck (Docker may still say "starting").
    ready: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Draining:
    """Old containers of ``service`` finishing what they serve, then removed, in the background."""
    service: str
    containers: tuple[str, ...]
    done: Future = field(repr=False, compare=False)


def retiring(draining: Iterable[Draining]) -> frozenset[str]:
    return frozenset(c for d in draining for c in d.containers)


def same_container(one: str, other: str) -> bool:
    """Two ids of one container, either of them possibly short (docker ps) or full."""
    return bool(one and other) and (one.startswith(other) or other.startswith(one))


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

def failing_services(states: dict[str, ServiceState], probed: set[str] = frozenset()) -> list[tuple[str, str]]:
    """(service, reason) for every service that is not ok, root causes first. ``probed``:
    containers that answered their own healthcheck while Docker, which runs it only every
    interval, still said "starting".

    A service stuck in "created" usually waits on an unhealthy dependency, so it
    is listed after the unhealthy/exited ones.
    """
    rank = {"unhealthy": 0, "exited": 1, "dead": 1, "restarting": 2, "starting": 3}
    found = []
    for s in states.values():
        if s.ok or (s.state == "running" and s.health == "starting" and s.container_id in probed):
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

def _run(target: Host, command: str, timeout: float | None = None, what: str = "") -> Result:
    return target.run(command, what, check=False, timeout=timeout)


def snapshot(target: Host, spec: ComposeSpec, exclude: frozenset[str] = frozenset()) -> dict[str, ServiceState]:
    """Current service states with full container and image ids; ``exclude``: containers left
    out (old ones still draining). Read with plain docker commands in one round trip
    (status.compose_containers): `docker compose ps` loads the whole project first, 0.6 s on
    the lab's droplet, and a cutover reads the states twice."""
    res = _run(target, status.compose_containers(spec.project))
    if res.exited != 0:
        return {}
    return states_from_containers(status.json_rows(res.stdout), exclude)


def states_from_containers(rows: Iterable[dict], exclude: frozenset[str] = frozenset()) -> dict[str, ServiceState]:
    """status.CONTAINER_FORMAT rows -> service -> the state of its highest-numbered container
    (Compose numbers a service's containers as it creates them: the newest), as `docker compose
    ps` lists them; ``exclude``: containers left out (old ones still draining)."""
    out: dict[str, ServiceState] = {}
    for row in sorted(rows, key=status.container_number):
        container = str(row.get("id") or "")
        if not row.get("service") or any(same_container(container, c) for c in exclude):
            continue
        state, health = str(row.get("state") or "").lower(), str(row.get("health") or "").lower()
        out[row["service"]] = ServiceState(name=row["service"], state=state, health=health,
                                           status=status.container_status(row), container_id=container,
                                           image_id=str(row.get("image_id") or ""),
                                           config_hash=str(row.get("config_hash") or ""))
    return out


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


def resolved_config(target: Host, t: cmd.ComposeProject) -> dict:
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
    images = build_images(resolved_config(target, t), spec.project)
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


def up(target: Host, spec: ComposeSpec, services_to_recreate: Iterable[str] = (),
       only: Iterable[str] | None = None) -> UpResult:
    """Start the live release's images (never builds) and wait until every service is healthy.

    ``services_to_recreate`` are recreated even when compose sees no change (their bind-mounted
    files changed in the new release; see sync.services_for_mounts). ``only``: those services
    alone (--no-deps), the others left as they run."""
    t = spec.on(target.layout)
    before = snapshot(target, spec)
    log = []
    res = _run(target, cmd.up(t, spec.wait_timeout, services=only, no_deps=only is not None),
               timeout=spec.wait_timeout + 300)
    log.append(res.output)
    if res.exited == 0 and services_to_recreate:
        res = _run(target, cmd.up(t, spec.wait_timeout, services=services_to_recreate, no_deps=True,
                                force_recreate=True), timeout=spec.wait_timeout + 300)
        log.append(res.output)
    after = snapshot(target, spec)
    judged = after if only is None else {n: s for n, s in after.items() if n in set(only)}
    failing = failing_services(judged)
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


_PLANNED = re.compile(r"^\s*([A-Za-z_]\w*\.\w+)\s*$", re.M)


def planned_migrations(output: str) -> list[str]:
    """``app.migration`` names from Django's ``migrate --plan`` (each followed by its operations,
    indented); none when it says "No planned migration operations"."""
    if "Planned operations:" not in output:
        raise ValueError("not the output of `manage.py migrate --plan`")
    return _PLANNED.findall(output.split("Planned operations:", 1)[1])


def plan_argv(argv: list[str]) -> list[str]:
    """The release's migrate command asked only to list what it would apply (Django's --plan)."""
    return [a for a in argv if a != "--noinput"] + ["--plan"]


def showmigrations_argv(argv: list[str]) -> list[str]:
    """The release's migrate command asked for every migration in order, applied or not
    (Django's ``showmigrations --plan``: ``[X]  app.name`` or ``[ ]  app.name`` per line)."""
    out = [a for a in argv if a != "--noinput"]
    return out[:out.index("migrate")] + ["showmigrations", "--plan"] if "migrate" in out else out


_SHOWN = re.compile(r"^\[( |X)\]\s+([A-Za-z_]\w*\.\w+)", re.M)


def unapply_argv(argv: list[str], app: str, target: str) -> list[str]:
    """The release's migrate command taking ``app`` back to ``target`` (a migration, or "zero")."""
    out = [a for a in argv if a != "--noinput"]
    return out + [app, target, "--noinput"]


def undo_targets(applied_now: list[str], shown: str) -> list[tuple[str, str]]:
    """(app, the migration to go back to) for each app of ``applied_now`` (migrations this run
    applied), from ``showmigrations --plan`` output (its order is the graph's): the app's
    migration just before its first one applied now, or "zero". In the order to unapply them:
    the last app applied first. ValueError when the listing does not show them."""
    order = [name for _, name in _SHOWN.findall(shown)]
    if not order or any(m not in order for m in applied_now):
        raise ValueError("the listing does not name the migrations applied")
    targets: list[tuple[str, str]] = []
    for app in dict.fromkeys(m.split(".", 1)[0] for m in applied_now):
        first = min(order.index(m) for m in applied_now if m.split(".", 1)[0] == app)
        before = [m for m in order[:first] if m.split(".", 1)[0] == app]
        targets.append((app, before[-1].split(".", 1)[1] if before else "zero"))
    return list(reversed(targets))


def read_plan(res: Result, service: str, argv: list[str]) -> list[str]:
    """The migrations a ``migrate --plan`` run (``res``) would apply, in order; ComposeError with
    its output when it failed or printed something else."""
    try:
        if res.ok:
            return planned_migrations(res.stdout)
    except ValueError:
        pass
    raise ComposeError(service, f"could not list the migrations to apply ({' '.join(argv)}): {res.tail()}",
                       {"migrate-plan.txt": res.output},
                       hint="read migrate-plan.txt in the run folder; the release's migrate command must accept "
                            "Django's --plan")


def read_migration(res: Result, service: str, argv: list[str]) -> str:
    """A migration run's output; ComposeError with it when the migration failed."""
    if not res.ok:
        raise ComposeError(service, f"the migration ({' '.join(argv)}) failed: {res.tail()}", {"migrate.txt": res.output},
                           hint="read migrate.txt in the run folder; migrations must stay compatible with the "
                                "release that is serving (expand first, contract a release later)")
    return res.output


def pending_migrations(target: Host, spec: ComposeSpec, release_id: str, service: str, argv: list[str],
                       env_from: str | None = None) -> list[str]:
    """The migrations the release's ``migrate`` would apply now (its argv with ``--plan``: nothing
    is applied), in order."""
    listing = plan_argv(argv)
    res = _run(target, cmd.run_once(spec.for_release(target.layout, release_id, env_from), service, listing),
               timeout=spec.wait_timeout + 300, what="listing the migrations to apply")
    return read_plan(res, service, listing)


def migrate(target: Host, spec: ComposeSpec, release_id: str, service: str, argv: list[str],
            env_from: str | None = None) -> str:
    """Run a release's migration once, with its image and env, while the live release serves."""
    res = _run(target, cmd.run_once(spec.for_release(target.layout, release_id, env_from), service, argv),
               timeout=spec.wait_timeout + 300)
    return read_migration(res, service, argv)
