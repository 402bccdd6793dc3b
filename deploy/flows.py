"""What each task does, as a sequence of steps: full deploy, update-only, verify, rollback, ...

Every flow takes the Run, the Settings and the Edges (real by default). Full deploy and
update-only differ only in provisioning, bootstrap and what is rebuilt.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Iterator, Sequence

from deploy import plan as deploy_plan
from deploy import steps, swarm_flow, wiring
from deploy.errors import OperatorError
from deploy.run import Run
from deploy.settings import Settings, require_stack_keys
from deploy.wiring import REAL_EDGES, Edges, Host, Inventory
from remote import images, lock, progress, sync
from remote.compose import ComposeSpec
from remote.target import Target


# -- finding and reaching the droplets ----------------------------------------------------------

def find_hosts(run: Run, settings: Settings, edges: Edges, required: bool) -> list[Host]:
    """DROPLET_IP, else the droplet found by name (token checked once, read-only).

    ``required`` (deploy and friends): every failure is an error. Otherwise (verify/collect) the
    run goes on without remote steps and is marked partial, with the reason and the fix.
    """
    if settings["DROPLET_IP"]:
        run.target = {"name": settings["DROPLET_NAME"], "region": None, "ip": settings["DROPLET_IP"]}
        run.skip_step("discover", f"DROPLET_IP={settings['DROPLET_IP']} given")
        return [Host(name=settings["DROPLET_NAME"], ip=settings["DROPLET_IP"])]
    try:
        spec = wiring.cloud_spec(settings, need_key=False)
        steps.token_check(run, edges.cloud, spec)
        return [steps.discover(run, edges.cloud, spec)]
    except OperatorError as exc:
        if required:
            raise
        run.registry.add_help(exc.hint)  # our own help text: keep its wording readable
        run.mark_partial("remote verification", f"{exc.message}; set DROPLET_IP or fix it ({exc.hint})")
        return []


@contextmanager
def connected(run: Run, settings: Settings, edges: Edges, hosts: Sequence[Host]) -> Iterator[Inventory]:
    """An inventory whose targets are all connected; closed whatever happens."""
    inventory = wiring.inventory(settings, hosts, edges)
    try:
        for target in inventory:
            steps.connect(run, target)
        yield inventory
    finally:
        inventory.close()


# -- the pieces flows share -----------------------------------------------------------------------

def ship(run: Run, settings: Settings, target: Target, local: sync.LocalRelease, update_only: bool) -> None:
    """Under the deploy lock: push the release, build its images while the live release serves,
    switch, start it and check that what runs is what was asked; prune old releases. A failure
    before the switch changes nothing live; a failure after it switches back."""
    spec = wiring.compose_spec(settings)
    try:
        with steps.locked(run, target, local.release_id, settings["LOCK_WAIT"]):
            pushed = steps.push(run, target, local, settings.stack_env_file(), settings["MIN_FREE_MB"])
            # Update-only builds just the services whose build inputs changed (None: all), plus
            # any whose image is missing on the droplet.
            wanted = steps.build(run, target, spec, pushed, local.compose,
                                 pushed.changed_services if update_only else None)
            steps.migrate(run, target, spec, pushed, local.compose)
            recreate = (sync.services_for_mounts(local.compose, pushed.changed + pushed.removed, local.compose_dir)
                        if pushed.previous_release else set())  # first release: every container is new
            steps.switch(run, target, pushed.release_id)
            with watched_up(run, target, spec):
                steps.up(run, target, spec, pushed.release_id, wanted, recreate, fallback=pushed.previous_release,
                         fallback_recreate=recreate)
            steps.prune(run, target, settings["RELEASES_KEEP"])
    except OperatorError:
        collect_best_effort(run, settings, target)
        raise


def watched_up(run: Run, target: Target, spec: ComposeSpec) -> AbstractContextManager[None]:
    """Live progress of the up step: each recreated service's state (created, starting, healthy)
    while compose starts the stack in one blocking command."""
    return run.watching("up", progress.ServiceStates(target, spec))


def collect_best_effort(run: Run, settings: Settings, target: Target) -> None:
    """After a failure the stack may be half up: its state is what the operator needs."""
    try:
        steps.collect(run, target, wiring.collect_spec(settings))
    except Exception as exc:  # noqa: BLE001 - the original failure is what gets reported
        run.warn(f"could not collect remote state after the failure: {exc}")


def verify(run: Run, settings: Settings, edges: Edges, hosts: Sequence[Host],
           inventory: Inventory | None = None) -> None:
    """Checks from here, then remote state over SSH. Missing pieces make the set partial."""
    if not hosts:
        run.skip_step("checks", "no droplet IP")
        run.skip_step("collect", "no droplet IP")
        return
    settings.require("DOMAIN")
    # The checks go to the edge: the first host (the only one until there are several).
    report = steps.run_checks(run, edges.run_checks, wiring.check_target(settings, hosts[0].ip),
                              wiring.checks_config(settings))
    own = inventory is None
    inventory = inventory or wiring.inventory(settings, hosts, edges)
    down: list[str] = []
    try:
        for target in inventory:
            if not target.connected:
                try:
                    steps.connect(run, target, quick=True)
                except OperatorError as exc:
                    run.skip_step("collect", exc.message)
                    run.mark_partial("remote collection",
                                     f"{exc.message}. Check that SSH_KEY_PATH's public key is on the droplet for "
                                     f"{settings['DEPLOY_USER']} and that port {settings['SSH_PORT']} is allowed from "
                                     "this machine (inv provision updates the allowlist)")
                    continue
            collected = steps.collect(run, target, wiring.collect_spec(settings))
            prefix = f"{target.name}: " if len(inventory) > 1 else ""
            down += [prefix + s for s in steps.not_serving(collected.services)]
            steps.check_drift(run, target)
    finally:
        if own:
            inventory.close()
    failed = report.by_status("fail")
    if failed or down:
        problems = ([f"{len(failed)} check(s) failed: " + ", ".join(r.name for r in failed)] if failed else []) \
            + (["not running or not healthy: " + ", ".join(down)] if down else [])
        raise steps.CheckFailures("; ".join(problems),
                                  ("`inv up` starts the live release's stopped services again (their logs are in "
                                   "remote/ in the run folder); " if down else "")
                                  + "each check's observed value and message are in summary.md and http/ in the run folder")


# -- the tasks ----------------------------------------------------------------------------------

def provision_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    settings.require("DOMAIN")
    spec = wiring.cloud_spec(settings)
    steps.provision(run, edges.cloud, spec, steps.token_check(run, edges.cloud, spec), settings.known_hosts_path)


def deploy(run: Run, settings: Settings, update_only: bool = False, edges: Edges = REAL_EDGES) -> None:
    if settings["NODES"] > 1:
        swarm_flow.deploy(run, settings, update_only, edges)
        return
    settings.require("DOMAIN")
    account = None if update_only else steps.token_check(run, edges.cloud, wiring.cloud_spec(settings, need_key=False))
    require_stack_keys(settings)  # before anything is created: nothing is made for a deploy that cannot start
    local = wiring.local_release(settings)  # hashed once: the lock names the release pushed
    if account is None:
        hosts = find_hosts(run, settings, edges, required=True)
    else:
        droplet = steps.provision(run, edges.cloud, wiring.cloud_spec(settings), account,
                                  settings.known_hosts_path).droplet
        if not droplet.public_ipv4:
            raise OperatorError("the droplet has no public IPv4 address, so nothing can be shipped",
                                "check the droplet's networking in the DigitalOcean console, then rerun")
        hosts = [Host(name=droplet.name, ip=droplet.public_ipv4, droplet_id=droplet.id, region=droplet.region)]
    with connected(run, settings, edges, hosts) as inventory:
        for target in inventory:
            if not update_only:
                steps.bootstrap(run, target, settings["CLOUD_INIT_TIMEOUT"])
            ship(run, settings, target, local, update_only)
        verify(run, settings, edges, hosts, inventory)


def plan(run: Run, settings: Settings, update_only: bool = False, edges: Edges = REAL_EDGES) -> deploy_plan.DeployPlan:
    """What `inv deploy` (or --update-only) would do, changing nothing: GET requests only to
    DigitalOcean, commands that only read on the droplet, and no deploy lock (the plan says who
    holds it). The same checks as a deploy come first, so a plan also finds what would stop one."""
    if settings["NODES"] > 1:
        return swarm_flow.plan(run, settings, update_only, edges)
    settings.require("DOMAIN")
    account = None if update_only else steps.token_check(run, edges.cloud, wiring.cloud_spec(settings, need_key=False))
    require_stack_keys(settings)
    local = wiring.local_release(settings)
    spec, env = wiring.compose_spec(settings), settings.stack_env_file()
    provision = None
    if account is None:
        hosts = find_hosts(run, settings, edges, required=True)
    else:
        provision = steps.plan_provision(run, edges.cloud, wiring.cloud_spec(settings), account)
        droplet = provision.droplet
        hosts = [Host(name=droplet.name, ip=droplet.public_ipv4, droplet_id=droplet.id, region=droplet.region)
                 ] if droplet and droplet.public_ipv4 else []
        if droplet and not droplet.public_ipv4:
            run.mark_partial("the release plan", f"droplet {droplet.name} has no public IPv4 address to read it from; "
                                                 "check its networking in the DigitalOcean console")
    releases: list[deploy_plan.ReleasePlan] = []
    if provision is not None and provision.droplet is None:  # still to be created: everything is new
        releases.append(deploy_plan.release_plan(provision.name, local, deploy_plan.LiveState(), spec, env, update_only))
    if hosts:
        inventory = wiring.inventory(settings, hosts, edges)
        try:
            for target in inventory:
                try:
                    steps.connect(run, target, quick=True)
                except OperatorError as exc:
                    run.mark_partial(f"the release plan for {target.name}", f"{exc.message} ({exc.hint})")
                    continue
                releases.append(steps.plan_release(run, target, local, spec, env, update_only))
        finally:
            inventory.close()
    result = deploy_plan.DeployPlan(mode="update" if update_only else "full", provision=provision, releases=releases)
    deploy_plan.publish(run, result)
    return result


def push_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    """Upload a release and build its images; nothing live changes (`inv up` would not start it:
    `current` only ever names a release that was live and healthy)."""
    require_stack_keys(settings)
    local = wiring.local_release(settings)
    with connected(run, settings, edges, find_hosts(run, settings, edges, required=True)) as inventory:
        for target in inventory:
            with steps.locked(run, target, local.release_id, settings["LOCK_WAIT"]):
                pushed = steps.push(run, target, local, settings.stack_env_file(), settings["MIN_FREE_MB"])
                steps.build(run, target, wiring.compose_spec(settings), pushed, local.compose, pushed.changed_services)


def up_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    """Start the live release again with its own images (after a reboot, or a container removed
    by hand)."""
    with connected(run, settings, edges, find_hosts(run, settings, edges, required=True)) as inventory:
        for target in inventory:
            with steps.locked(run, target, "(up)", settings["LOCK_WAIT"]):
                current = sync.current_release(target)
                if current is None:
                    raise OperatorError("no release on the droplet yet", "run `inv deploy` first")
                meta = sync.read_release_meta(target, current) or {}
                spec = wiring.compose_spec(settings)
                with watched_up(run, target, spec):
                    steps.up(run, target, spec, current, meta.get("images") or {})


def verify_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    if settings["NODES"] > 1 and not settings["DROPLET_IP"]:
        swarm_flow.verify_only(run, settings, edges)
        return
    verify(run, settings, edges, find_hosts(run, settings, edges, required=False))


def collect_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    hosts = find_hosts(run, settings, edges, required=False)
    if not hosts:
        run.skip_step("collect", "no droplet IP")
        return
    with connected(run, settings, edges, hosts) as inventory:
        for target in inventory:
            steps.collect(run, target, wiring.collect_spec(settings))


ROLLBACK_OK = ("success", "rolled-back")   # releases that were live and healthy


def rollback(run: Run, settings: Settings, release: str | None, edges: Edges = REAL_EDGES) -> None:
    """Start a previous successful release again: its files, env snapshot and images; no rebuild."""
    if settings["NODES"] > 1:
        swarm_flow.rollback(run, settings, release, edges, choose_rollback)
        return
    hosts = find_hosts(run, settings, edges, required=True)
    compose_file = sync.read_compose(settings.stack_dir / "compose.yml")
    spec = wiring.compose_spec(settings)
    with connected(run, settings, edges, hosts) as inventory:
        for target in inventory:
            with steps.locked(run, target, release or "(previous)", settings["LOCK_WAIT"]):
                with run.step("choose-release") as step:
                    current, chosen = choose_rollback(target, release)
                    wanted = chosen.meta.get("images") or {}
                    present = images.lookup(target, [e["ref"] for e in wanted.values()])
                    missing = sorted(ref for ref, image_id in present.items() if image_id == images.MISSING)
                    if missing:
                        raise OperatorError(f"release {chosen.id} cannot start again: its images {', '.join(missing)} "
                                            "are gone from the droplet", "deploy that release's sources again, or "
                                            "pick another release from `inv releases`")
                    step.note(f"{current or '(none)'} -> {chosen.id}")
                    # Only services whose bind-mounted files differ between the two are recreated
                    # (Traefik's config): recreating Traefik for nothing would drop requests.
                    live_manifest = ((sync.read_release_meta(target, current) or {}).get("manifest")
                                     if current else None)
                    changed = (sum(sync.diff_manifests(live_manifest, chosen.meta.get("manifest") or {}), [])
                               if live_manifest is not None else None)
                    mounts = sync.services_for_mounts(compose_file, changed)
                steps.switch(run, target, chosen.id)
                with watched_up(run, target, spec):
                    steps.up(run, target, spec, chosen.id, wanted, mounts, fallback=current, fallback_recreate=mounts)
                if current and current != chosen.id:
                    sync.record_outcome(target, current, "rolled-back")
        verify(run, settings, edges, hosts, inventory)


def choose_rollback(target: Target, release: str | None) -> tuple[str | None, sync.ReleaseInfo]:
    """(current, the release to return to): the named one, or the newest good one before current.
    Only releases that were live and healthy, with their image map, qualify."""
    found = sync.list_releases(target)
    current = next((r.id for r in found if r.current), None)
    good = [r for r in found if r.outcome in ROLLBACK_OK and r.meta.get("images") and r.id != current]
    names = ", ".join(r.id for r in good[-5:]) or "none"
    if release is not None:
        pick = next((r for r in good if r.id == release), None)
        if pick is None:
            known = next((r for r in found if r.id == release), None)
            why = "does not exist" if known is None else (
                "is the live release" if release == current else f"never became healthy (outcome {known.outcome or 'none'})")
            raise OperatorError(f"release {release} {why}; it cannot be rolled back to",
                                f"pick one of the releases that ran healthy: {names} (see `inv releases`)")
        return current, pick
    older = [r for r in good if current is None or r.id < current]
    if not older:
        raise OperatorError(f"no release older than {current or '(none)'} ran healthy: nothing to roll back to",
                            "list releases with `inv releases`")
    return current, older[-1]


def releases(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> list[sync.ReleaseInfo]:
    with connected(run, settings, edges, find_hosts(run, settings, edges, required=True)) as inventory:
        found = [r for target in inventory for r in steps.list_releases(run, target)]
    lines = [release_line(r) for r in found]
    run.artifacts.write_text("releases.txt", "\n".join(lines) + "\n")
    for line in lines:
        run.console.print(line, markup=False)
    return found


def release_line(r: sync.ReleaseInfo) -> str:
    """`* <id>  success  2026-11-26T13:00:00+00:00  by ops@laptop  api=3f2a1b4c9d0e ...` (* = live)."""
    imgs = " ".join(f"{n}={str(e.get('id', '')).removeprefix('sha256:')[:12]}"
                    for n, e in sorted((r.meta.get("images") or {}).items()))
    return (f"{'*' if r.current else ' '} {r.id}  {r.outcome or 'never-live':11} {r.created or '?'}"
            f"  by {r.meta.get('by') or '?'}  {imgs or '(no image map)'}")


def lock_status(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    with connected(run, settings, edges, find_hosts(run, settings, edges, required=True)) as inventory:
        for target in inventory:
            state = lock.read(target)
            run.record("lock", state)
            if state is None:
                run.log("deploy lock: free")
                continue
            stale = lock.stale_reason(state, settings["LOCK_TTL"])
            run.log(f"deploy lock: held by {state.describe()}"
                    + (f"; stale: {stale} (`inv lock.release --if-stale` releases it)" if stale else ""))


def lock_release(run: Run, settings: Settings, edges: Edges = REAL_EDGES, if_stale: bool = False) -> None:
    """Release the deploy lock; ``if_stale``: only when its holder is surely gone (else LockHeld)."""
    with connected(run, settings, edges, find_hosts(run, settings, edges, required=True)) as inventory:
        for target in inventory:
            if if_stale:
                released = lock.release_if_stale(target, settings["LOCK_TTL"])
                run.log(f"stale deploy lock released (held by {released[0].describe()}: {released[1]})"
                        if released else "deploy lock was already free")
                continue
            holder = lock.status(target)
            lock.release(target)
            run.log(f"deploy lock released (was held by {holder})" if holder else "deploy lock was already free")
