"""The zero-downtime cutover of a Compose release: which containers change and how (a pure plan),
then doing it: start-first services new beside old, each ready by its own healthcheck, old ones
drained in the background, stop-first leaves recreated in place, independent services at once.

remote/compose.py builds and starts a release; this module replaces what runs with it."""
from __future__ import annotations

import json
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Callable, Iterable

from remote import commands as cmd
from remote import compose
from remote.compose import (ComposeError, ComposeSpec, Draining, ServiceState, UpResult, diagnostics, failing_services,
                            retiring, snapshot, up)
from remote.host import Host, Result


def _run(target: Host, command: str, timeout: float | None = None, what: str = "") -> Result:
    return target.run(command, what, check=False, timeout=timeout)



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


def dependency_order(services: dict[str, dict]) -> list[str]:
    """Every service, each after the ones it depends on (ties by name)."""
    ordered: list[str] = []

    def visit(name: str, seen: tuple[str, ...] = ()) -> None:
        if name in ordered or name in seen:
            return
        for dep in sorted(depends_on(services.get(name) or {})):
            visit(dep, seen + (name,))
        ordered.append(name)

    for name in sorted(services):
        visit(name)
    return [n for n in ordered if n in services]


def rolling_order(config: dict) -> list[str]:
    """Start-first services, dependencies first (django before the api that calls it)."""
    services = config.get("services") or {}
    return [n for n in dependency_order(services) if update_order(services.get(n) or {}) == START_FIRST]


def depends_on(definition: dict, healthy: bool = False) -> set[str]:
    """The services ``definition`` depends on; ``healthy``: only those it needs healthy (compose's
    ``condition: service_healthy``), the ones its replacement waits for."""
    deps = (definition or {}).get("depends_on") or {}
    if isinstance(deps, list):
        return set() if healthy else set(deps)
    if not isinstance(deps, dict):
        return set()
    return {n for n, c in deps.items() if not healthy or (c or {}).get("condition") == "service_healthy"}


def _ids(target: Host, project: str, service: str) -> list[str]:
    return target.run(cmd.service_containers(project, service), f"listing {service} containers").stdout.split()


def _hashes(target: Host, t: cmd.ComposeProject) -> dict[str, str]:
    out = _run(target, cmd.config_hashes(t)).stdout
    return dict(line.split(None, 1) for line in out.splitlines() if len(line.split()) == 2)


# How often the deployer looks at a new container: its own healthcheck command run at once, so a
# replacement waits for the service, not for Docker's next check (every 10 s in the stack).
POLL = 0.25

READY, WAIT = "ready", "wait"


def judge(probe_line: str) -> str:
    """``READY``, ``WAIT``, or why the new container will not become healthy, from cmd.probe's line."""
    parts = probe_line.split()
    if len(parts) != 3:
        return probe_line.strip() or "gone"
    state, health, now = parts
    if state == "running" and (health in ("healthy", "none") or (health == "starting" and now == "ok")):
        return READY
    if health == "unhealthy" or state not in ("running", "created"):
        return f"{state} {health}"
    return WAIT


def _tests(target: Host, containers: Iterable[str]) -> dict[str, list[str] | None]:
    """container (by id and by name) -> its healthcheck's command (None without one)."""
    out: dict[str, list[str] | None] = {}
    for line in _run(target, cmd.healthcheck_tests(containers), what="reading healthchecks").stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3:
            continue
        try:
            check = json.loads(parts[2]) or {}
        except json.JSONDecodeError:
            check = {}
        out[parts[0]] = out[parts[1].lstrip("/")] = cmd.probe_argv(check.get("Test"))
    return out


def answering_now(target: Host, containers: list[str]) -> set[str]:
    """Of these containers, the ones Docker still calls "starting" that pass their own healthcheck
    when it is run now (Docker runs it only every interval): healthy in all but Docker's record."""
    if not containers:
        return set()
    tests = _tests(target, containers)
    with ThreadPoolExecutor(max_workers=len(containers), thread_name_prefix="probe") as pool:
        verdicts = pool.map(lambda c: judge(_run(target, cmd.probe(c, tests.get(c)), what="probing a starting container").stdout), containers)
        return {c for c, verdict in zip(containers, verdicts) if verdict == READY}


def _wait_ready(target: Host, container: str, argv: list[str] | None, timeout: float, poll: float,
                sleep: Callable[[float], None]) -> str | None:
    """None once the container answers its own healthcheck (or runs without one); else why not."""
    deadline = time.monotonic() + timeout
    verdict = WAIT
    while True:
        verdict = judge(_run(target, cmd.probe(container, argv), what="probing a new container").stdout)
        if verdict == READY:
            return None
        if verdict != WAIT:
            return verdict
        if time.monotonic() >= deadline:
            return f"still starting after {timeout:g} s"
        sleep(poll)


def start_beside(target: Host, spec: ComposeSpec, service: str, health_timeout: float, poll: float = POLL,
                 sleep: Callable[[float], None] = time.sleep, old: list[str] | None = None) -> tuple[str, list[str]]:
    """Start-first, first half: a new container of ``service`` beside the old one(s), ready by its
    own healthcheck; (the new container, the old ones). Until the old ones stop, both answer on
    the service's name (Traefik and the API dial the next address when one refuses). If the new
    one never becomes healthy it is removed and the old ones serve on. ``old``: the service's
    containers as the cutover read them (else they are listed here: with five replacements
    starting, one more `docker ps` waited up to 2.6 s on the lab's busy engine)."""
    t = spec.on(target.layout)
    old = _ids(target, spec.project, service) if old is None else old
    res = _run(target, cmd.scale_up(t, service, len(old) + 1), timeout=health_timeout + 120)
    new = [c for c in _ids(target, spec.project, service) if c not in old]
    if not res.ok or len(new) != 1:
        target.run(cmd.remove_now(new), "removing the new container", check=False)
        raise ComposeError(service, f"could not start a new container beside the old one ({res.tail()})",
                           {"compose-scale.txt": res.output}, hint="read compose-scale.txt in the run folder")
    why = _wait_ready(target, new[0], _tests(target, new).get(new[0]), health_timeout, poll, sleep)
    if why is not None:
        diag = {f"logs-{service}-new.txt": _run(target, cmd.container_logs(new[0], spec.log_tail)).output,
                f"health-{service}-new.json": _run(target, cmd.health(new[0])).output}
        target.run(cmd.remove_now(new), "removing the unhealthy new container", check=False)
        raise ComposeError(service, f"the new container did not become healthy ({why}); the old one kept serving",
                           diag, hint=f"read logs-{service}-new.txt and health-{service}-new.json in the run folder; "
                                      "fix the service and deploy again")
    return new[0], old


def drain(target: Host, service: str, old: list[str], grace: int) -> None:
    """Start-first, second half: the old containers get SIGTERM and ``grace`` seconds to finish
    what they serve, then go."""
    target.run(cmd.stop_and_remove(old, grace), f"stopping the old {service} container", timeout=grace + 60)


def recreate_in_place(target: Host, spec: ComposeSpec, service: str, health_timeout: float, poll: float = POLL,
                      sleep: Callable[[float], None] = time.sleep) -> str:
    """Stop-first: the service's one container replaced by a new one (never two at once: beat's
    scheduler), awaited by its own healthcheck; the new container."""
    res = _run(target, cmd.recreate_detached(spec.on(target.layout), [service]), timeout=health_timeout + 120)
    ids = _ids(target, spec.project, service)
    if not res.ok or len(ids) != 1:
        raise ComposeError(service, f"could not recreate it ({res.tail()})", {"compose-up.txt": res.output},
                           hint="read compose-up.txt in the run folder")
    why = _wait_ready(target, ids[0], _tests(target, ids).get(ids[0]), health_timeout, poll, sleep)
    if why is not None:
        raise ComposeError(service, f"did not become healthy ({why})",
                           diagnostics(target, spec, [service], {"compose-up.txt": res.output}))
    return ids[0]


IN_PLACE = "in-place"


def roll(target: Host, spec: ComposeSpec, plan: dict[str, str], definitions: dict[str, dict],
         poll: float = POLL, sleep: Callable[[float], None] = time.sleep, together: bool = False,
         draining: list[Draining] | None = None, known: dict[str, list[str]] | None = None) -> list[str]:
    """Carry out a cutover plan (plan_cutover): each service in its own thread as soon as the ones
    it needs healthy among them are, start-first (new beside old, old drained in the background
    while the next ones start) or in place. The cutover lasts as long as its longest chain
    (django, then the api that calls it), not the sum. A service that fails keeps its old
    container serving where it was start-first, and so do those that wait on it; the others
    finish, the old ones drain, then the first failure is raised. ``together`` (a rollback: these
    versions ran side by side before): every service starts at once, none waits for the new
    containers of what it depends on (the old ones serve it meanwhile). ``draining``: the old
    containers' drains are appended to it and left running (the caller awaits them) once every
    replacement is healthy; without it they are awaited here. ``known``: each service's
    containers, read just before (start_beside's ``old``). Returns the services replaced
    start-first."""
    if not plan:
        return []
    errors: dict[str, Exception] = {}
    drains = ThreadPoolExecutor(max_workers=len(plan), thread_name_prefix="drain")
    drained: list[Draining] = []
    later = False
    try:
        with ThreadPoolExecutor(max_workers=len(plan), thread_name_prefix="cutover") as pool:
            futures: dict[str, Future[str]] = {}

            def one(name: str) -> str:
                definition = definitions.get(name) or {}
                waits = set() if together else depends_on(definition, healthy=True) & set(plan)
                for dep in sorted(waits):
                    futures[dep].result()          # raises when the dependency's replacement failed
                if plan[name] == IN_PLACE:
                    return recreate_in_place(target, spec, name, spec.wait_timeout, poll, sleep)
                new, old = start_beside(target, spec, name, spec.wait_timeout, poll, sleep,
                                        old=(known or {}).get(name))
                drained.append(Draining(name, tuple(old), drains.submit(drain, target, name, old,
                                                                        grace_seconds(definition))))
                return new

            for name in plan:                       # in dependency order: a dependency is submitted first
                futures[name] = pool.submit(one, name)
            for name in plan:
                try:
                    futures[name].result()
                except Exception as exc:  # noqa: BLE001 - raised below once every replacement has ended
                    errors[name] = exc
        later = draining is not None and not errors
    finally:
        drains.shutdown(wait=not later)     # an interrupt or a failure: the drains end first, as before
    if later:
        draining.extend(drained)
    else:
        for d in drained:
            try:
                d.done.result()
            except Exception as exc:  # noqa: BLE001
                errors.setdefault("(drain)", exc)
    if errors:
        raise next(exc for name, exc in errors.items()
                   if not (depends_on(definitions.get(name) or {}, healthy=True) & set(errors)))
    return [n for n, how in plan.items() if how == START_FIRST]


@dataclass(frozen=True)
class CutoverPlan:
    steps: dict[str, str]       # service -> START_FIRST | IN_PLACE, dependencies first
    stop_first: list[str]       # running services recreated stop-first (announced before)
    compose_up: bool            # `compose up --wait` finishes the job (its ordering matters)
    first: list[str] = field(default_factory=list)   # stop-first, others depend on them: before the steps


def plan_cutover(services: dict[str, dict], before: dict[str, ServiceState], wanted: dict[str, str],
                 recreate: set[str]) -> CutoverPlan:
    """What a cutover does, from the config (``services``, ``wanted`` config hashes) and what runs
    (``before``). Start-first services whose config changed are replaced beside the old ones; a
    stop-first one nothing depends on (beat, Traefik) is recreated in place in the same plan; a
    service missing or to remove, or one not running, leaves the rest to `compose up`. A
    stop-first change that others depend on (PostgreSQL, Redis: a rotated password) is
    recreated first, so the replacements of what depends on it start against the new one.
    ``recreate``: bind-mounted files changed, so recreated whatever their hash (stop-first)."""
    running = {n: s for n, s in before.items() if s.state == "running"}

    def outdated(name: str) -> bool:
        label, want = running[name].config_hash, wanted.get(name)
        return name in recreate or bool(label and want and label != want)

    order = dependency_order(services)
    start_first = [n for n in order if n in running and n not in recreate
                   and update_order(services.get(n) or {}) == START_FIRST and outdated(n)]
    stop_first = [n for n in sorted(running) if n not in start_first and outdated(n)]
    first = [n for n in order if n in stop_first and any(n in depends_on(d) for d in services.values())]
    compose_up = set(services) != set(before) or len(running) != len(before)
    chosen = set(start_first) | (set() if compose_up else set(stop_first) - set(first))
    return CutoverPlan({n: START_FIRST if n in start_first else IN_PLACE for n in order if n in chosen},
                       stop_first, compose_up, first)


def _containers(target: Host, project: str) -> dict[str, list[tuple[str, str]]]:
    """service -> [(container, config hash)], every container of the project."""
    out: dict[str, list[tuple[str, str]]] = {}
    for line in _run(target, cmd.project_containers(project), what="listing the containers").stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.setdefault(parts[1], []).append((parts[0], parts[2]))
    return out


def _remove_strays(target: Host, containers: dict[str, list[tuple[str, str]]], services: Iterable[str],
                   wanted: dict[str, str]) -> bool:
    """A start-first replacement cut short (Ctrl-C, lost SSH) can leave a second container of a
    service running beside the first (``containers``: _containers). Where one of them matches the
    config, the others go. True when any went."""
    removed = False
    for name, found in containers.items():
        if name not in services or len(found) < 2 or not any(h == wanted.get(name) for _, h in found):
            continue
        strays = [c for c, h in found if h != wanted.get(name)]
        target.run(cmd.stop_and_remove(strays, 10), f"removing a stray {name} container", timeout=120)
        removed = True
    return removed


def _await_starting(target: Host, spec: ComposeSpec, states: dict[str, ServiceState], probed: set[str],
                    poll: float, sleep: Callable[[float], None]) -> set[str]:
    """Containers this cutover did not start that Docker still calls "starting" (one started by
    an earlier run cut short, or restarted by Docker): awaited by their own healthcheck as
    `compose up --wait` would, at once; the ones found healthy."""
    starting = [s.container_id for s in states.values()
                if s.state == "running" and s.health == "starting" and s.container_id not in probed]
    if not starting:
        return set()
    tests = _tests(target, starting)
    with ThreadPoolExecutor(max_workers=len(starting), thread_name_prefix="await") as pool:
        verdicts = list(pool.map(lambda c: _wait_ready(target, c, tests.get(c), spec.wait_timeout, poll, sleep),
                                 starting))
    return {c for c, why in zip(starting, verdicts) if why is None}


def cutover(target: Host, spec: ComposeSpec, services_to_recreate: Iterable[str] = (),
            poll: float = POLL, sleep: Callable[[float], None] = time.sleep,
            announce: Callable[[list[str]], None] = lambda stop_first: None, together: bool = False,
            drain_later: bool = False) -> UpResult:
    """Bring the live release up with no dropped request where the stack allows it (plan_cutover,
    then roll); ``announce`` is told the services recreated stop-first before anything changes.
    With nothing running yet it is a plain up. ``drain_later``: return once every new container is
    healthy, the old ones still draining (UpResult.draining: the caller awaits them)."""
    before = snapshot(target, spec)
    if not any(s.state == "running" for s in before.values()):
        announce([])
        return up(target, spec, services_to_recreate)
    t = spec.on(target.layout)
    # Three reads that need nothing from each other: side by side, each on its own channel.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="cutover-read") as pool:
        config_read, hashes_read = pool.submit(compose.resolved_config, target, t), pool.submit(_hashes, target, t)
        containers_read = pool.submit(_containers, target, spec.project)
    config, wanted = config_read.result(), hashes_read.result()
    services = config.get("services") or {}
    containers: dict[str, list[tuple[str, str]]] | None = containers_read.result()
    if _remove_strays(target, containers, rolling_order(config), wanted):
        before, containers = snapshot(target, spec), None     # what stays is listed again where needed
    plan = plan_cutover(services, before, wanted, set(services_to_recreate))
    announce(plan.stop_first)
    if plan.first:
        up(target, spec, only=plan.first)
    draining: list[Draining] = []
    replaced = roll(target, spec, plan.steps, services, poll, sleep, together=together,
                    draining=draining if drain_later and not plan.compose_up else None,
                    known=None if containers is None else {n: [c for c, _ in found] for n, found in containers.items()})
    try:
        if plan.compose_up:
            rest = up(target, spec, services_to_recreate)
        else:
            # Nothing replaced: what runs is what was read at the start of this step (moments ago).
            after = snapshot(target, spec, retiring(draining)) if plan.steps or plan.first else before
            probed = {s.container_id for n, s in after.items() if n in plan.steps}
            probed |= _await_starting(target, spec, after, probed, poll, sleep)
            failing = failing_services(after, probed)
            if failing:
                names = [n for n, _ in failing]
                raise ComposeError(names[0], failing[0][1], diagnostics(target, spec, names))
            rest = UpResult(services=after, recreated=[], rebuilt=[], ready=frozenset(probed))
    except BaseException:
        futures_wait([d.done for d in draining])     # the way back starts from a settled stack
        raise
    after = rest.services
    recreated = sorted(n for n, s in after.items() if n not in before or before[n].container_id != s.container_id)
    rebuilt = sorted(n for n, s in after.items()
                     if n not in before or (s.image_id and before[n].image_id != s.image_id))
    return UpResult(services=after, recreated=recreated, rebuilt=rebuilt, output=rest.output, replaced=replaced,
                    draining=tuple(draining), ready=rest.ready)
