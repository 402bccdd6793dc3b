"""What each task does, as a sequence of steps: full deploy, update-only, verify, rollback, ...

Every flow takes the Run, the Settings and the Edges (real by default). Full deploy and
update-only differ only in provisioning, bootstrap and what is rebuilt.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from deploy import steps, wiring
from deploy.errors import OperatorError
from deploy.run import Run
from deploy.settings import Settings, require_stack_keys
from deploy.wiring import REAL_EDGES, Edges, Host, Inventory
from remote import lock, sync
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
    """Under the deploy lock: push the release, switch to it, bring it up, prune old releases.
    On failure the remote state is collected for diagnosis before the error goes on."""
    try:
        with steps.locked(run, target, local.release_id, settings["LOCK_WAIT"]):
            pushed = steps.push(run, target, local, settings.stack_env_file())
            # Update-only rebuilds just the services whose build inputs changed (None: all).
            build = pushed.changed_services if update_only else None
            recreate = (sync.services_for_mounts(local.compose, pushed.changed + pushed.removed, local.compose_dir)
                        if pushed.previous_release else set())  # first release: every container is new
            steps.switch(run, target, pushed.release_id)
            steps.up(run, target, wiring.compose_spec(settings), pushed.release_id, build, recreate)
            steps.prune(run, target, settings["RELEASES_KEEP"])
    except OperatorError:
        collect_best_effort(run, settings, target)
        raise


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
            steps.collect(run, target, wiring.collect_spec(settings))
    finally:
        if own:
            inventory.close()
    failed = report.by_status("fail")
    if failed:
        raise steps.CheckFailures(f"{len(failed)} check(s) failed: " + ", ".join(r.name for r in failed),
                                  "each check's observed value and message are in summary.md and http/ in the run folder")


# -- the tasks ----------------------------------------------------------------------------------

def provision_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    settings.require("DOMAIN")
    spec = wiring.cloud_spec(settings)
    steps.provision(run, edges.cloud, spec, steps.token_check(run, edges.cloud, spec))


def deploy(run: Run, settings: Settings, update_only: bool = False, edges: Edges = REAL_EDGES) -> None:
    settings.require("DOMAIN")
    account = None if update_only else steps.token_check(run, edges.cloud, wiring.cloud_spec(settings, need_key=False))
    require_stack_keys(settings)  # before anything is created: nothing is made for a deploy that cannot start
    local = sync.LocalRelease.read(settings.stack_dir)  # hashed once: the lock names the release pushed
    if account is None:
        hosts = find_hosts(run, settings, edges, required=True)
    else:
        droplet = steps.provision(run, edges.cloud, wiring.cloud_spec(settings), account).droplet
        if not droplet.public_ipv4:
            raise OperatorError("the droplet has no public IPv4 address, so nothing can be shipped",
                                "check the droplet's networking in the DigitalOcean console, then rerun")
        hosts = [Host(name=droplet.name, ip=droplet.public_ipv4, droplet_id=droplet.id, region=droplet.region)]
    with connected(run, settings, edges, hosts) as inventory:
        for target in inventory:
            if not update_only:
                steps.bootstrap(run, target)
            ship(run, settings, target, local, update_only)
        verify(run, settings, edges, hosts, inventory)


def push_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    require_stack_keys(settings)
    local = sync.LocalRelease.read(settings.stack_dir)
    with connected(run, settings, edges, find_hosts(run, settings, edges, required=True)) as inventory:
        for target in inventory:
            with steps.locked(run, target, local.release_id, settings["LOCK_WAIT"]):
                pushed = steps.push(run, target, local, settings.stack_env_file())
                steps.switch(run, target, pushed.release_id)


def up_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    with connected(run, settings, edges, find_hosts(run, settings, edges, required=True)) as inventory:
        for target in inventory:
            with steps.locked(run, target, "(up)", settings["LOCK_WAIT"]):
                current = sync.current_release(target)
                if current is None:
                    raise OperatorError("no release on the droplet yet", "run `inv deploy` (or `inv push`) first")
                steps.up(run, target, wiring.compose_spec(settings), current, None)


def verify_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    verify(run, settings, edges, find_hosts(run, settings, edges, required=False))


def collect_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    hosts = find_hosts(run, settings, edges, required=False)
    if not hosts:
        run.skip_step("collect", "no droplet IP")
        return
    with connected(run, settings, edges, hosts) as inventory:
        for target in inventory:
            steps.collect(run, target, wiring.collect_spec(settings))


def rollback(run: Run, settings: Settings, release: str | None, edges: Edges = REAL_EDGES) -> None:
    """Switch `current` back (previous release, or a named one) and bring it up."""
    hosts = find_hosts(run, settings, edges, required=True)
    mounts = sync.services_for_mounts(sync.read_compose(settings.stack_dir / "compose.yml"), None)
    with connected(run, settings, edges, hosts) as inventory:
        for target in inventory:
            with steps.locked(run, target, release or "(previous)", settings["LOCK_WAIT"]):
                current = sync.current_release(target)
                with run.step("choose-release") as step:
                    chosen = release or sync.previous_release(target)
                    step.note(f"{current} -> {chosen}")
                # Images are rebuilt from the old release's sources (layer cache makes it quick).
                steps.switch(run, target, chosen)
                steps.up(run, target, wiring.compose_spec(settings), chosen, None, mounts)
                if current and current != chosen:
                    sync.record_outcome(target, current, "rolled-back")
        verify(run, settings, edges, hosts, inventory)


def releases(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> list[sync.ReleaseInfo]:
    with connected(run, settings, edges, find_hosts(run, settings, edges, required=True)) as inventory:
        found = [r for target in inventory for r in steps.list_releases(run, target)]
    lines = [f"{'*' if r.current else ' '} {r.id}  created {r.created or '?'}  outcome {r.outcome or '-'}" for r in found]
    run.artifacts.write_text("releases.txt", "\n".join(lines) + "\n")
    for line in lines:
        run.console.print(line)
    return found


def lock_status(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    with connected(run, settings, edges, find_hosts(run, settings, edges, required=True)) as inventory:
        for target in inventory:
            holder = lock.status(target)
            run.record("lock", holder)
            run.log(f"deploy lock: held by {holder}" if holder else "deploy lock: free")


def lock_release(run: Run, settings: Settings, edges: Edges = REAL_EDGES) -> None:
    with connected(run, settings, edges, find_hosts(run, settings, edges, required=True)) as inventory:
        for target in inventory:
            holder = lock.status(target)
            lock.release(target)
            run.log(f"deploy lock released (was held by {holder})" if holder else "deploy lock was already free")
