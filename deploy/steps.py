"""The steps of a run. Each takes the Run, a Host (or the cloud edge) and plain values, does
one thing, records its typed result on the Run and returns it. No step reads Settings (wiring
does) and none reaches into another step's handle.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from core.errors import OperatorError, Terminated
from deploy import checks, cloud, hostkey, rotation
from deploy import plan as deploy_plan
from deploy.redact import Secret, is_secret_name
from deploy.report.run import Run
from deploy.settings import Settings
from deploy.wiring import CloudPort
from remote import collect as remote_collect
from remote import commands as cmd
from remote import cloudinit, compose, edge_config, images, lock, progress, sync
from remote import prune as remote_prune
from remote.connection import host_entry
from remote.host import ConnectionLost, Host


@dataclass(frozen=True)
class BootstrapResult:
    base: str
    base_state: str       # ready | created
    docker: str
    compose: str
    cloud_init: str = "done"      # done | absent (a droplet without cloud-init)
    cloud_init_wait_s: float = 0.0


class CheckFailures(OperatorError):
    """Outside-in checks failed (the deploy itself may have worked)."""


def token_check(run: Run, cloud_port: CloudPort, spec: cloud.CloudSpec) -> cloud.AccountInfo:
    """Fail fast: a missing or rejected token stops the run before anything else happens."""
    with run.step("token-check") as step:
        account = cloud_port.check_token(spec)
        step.note(f"account {account.email}")
    return account


def record_target(run: Run, droplet: cloud.DropletInfo) -> None:
    run.target = {"name": droplet.name, "region": droplet.region, "ip": droplet.public_ipv4,
                  "droplet_id": droplet.id}


def pin_host_key(run: Run, known_hosts: Path, d: cloud.DropletInfo, port: int) -> None:
    """A droplet created now carries the key kept for its name: pin it. A droplet found is
    already pinned (or was created by a run that stopped before pinning: pin its kept key)."""
    entry = host_entry(d.public_ipv4, port)
    if not d.created and hostkey.is_pinned(known_hosts, entry):
        return
    public = hostkey.load_public(known_hosts, d.name)
    if public is None:
        run.warn(f"no SSH host key is kept for droplet {d.name}; its first SSH contact will be refused "
                 f"(add its key to {known_hosts} after checking it in the DigitalOcean console)")
        return
    hostkey.pin(known_hosts, entry, public)
    run.log(f"pinned the SSH host key of {d.name} ({entry}) in {known_hosts}")


def cloud_events(run: Run) -> Callable[[str, str], None]:
    """The cloud adapter's events into the run: its retries as warnings, the rest as log lines."""
    def on_event(level: str, message: str) -> None:
        run.warn(message) if level == "warning" else run.log(message)
    return on_event


def connect(run: Run, target: Host, quick: bool = False) -> Host:
    with run.step("connect") as step:
        target.open(quick=quick)
        step.note(f"{target.name} at {target.host}")
    return target


def bootstrap(run: Run, target: Host, cloud_init_timeout: float) -> BootstrapResult:
    """Full deploy only: cloud-init has finished (a new droplet answers SSH while it still
    installs Docker), the release root exists and is ours, Docker and Compose answer."""
    base = target.layout.base
    with run.step("bootstrap") as step:
        t0 = time.monotonic()
        state = cloudinit.wait(target, cloud_init_timeout, on_progress=run.log)
        waited = time.monotonic() - t0
        res = target.run(cmd.ensure_base_dir(target.layout), f"checking {base}",
                         hint=f"cloud-init creates {base} for the deploy user (deploy/cloud/user_data.py); on a droplet "
                              f"made another way create it as root: install -d -o <user> -g <user> {base} "
                              "(REMOTE_BASE_DIR chooses another place)")
        docker = target.run(cmd.docker_ready(), "checking Docker and Compose",
                            hint="cloud-init installs Docker Engine and the Compose plugin and adds the user to the "
                                 "docker group; it has finished, so read /var/log/cloud-init-output.log on the droplet")
        versions = docker.stdout.split() + ["?", "?"]
        result = BootstrapResult(base=base, base_state=res.stdout.strip(), docker=versions[0], compose=versions[1],
                                 cloud_init=state.state, cloud_init_wait_s=round(waited, 1))
        run.record("bootstrap", result)
        step.note(f"cloud-init {state.state} (waited {waited:.0f}s); {base} {result.base_state}; "
                  f"docker {result.docker}, compose {result.compose}")
    return result


def settled(run: Run, target: Host, cloud_init_timeout: float) -> None:
    """One command when cloud-init has finished; while it still runs (a task right after a new
    droplet's `inv provision`), wait for it with progress."""
    with run.step("cloud-init") as step:
        state = cloudinit.wait(target, cloud_init_timeout, on_progress=run.log)
        step.note(f"{target.name}: {state.state}")


@contextmanager
def locked(run: Run, target: Host, release: str | None, wait: float) -> Iterator[lock.LockHolder]:
    """Hold the deploy lock for the block; on the way out release it only while it is ours."""
    holder = lock.LockHolder.here(release, run.command)
    with run.step("lock") as step:
        lock.acquire(target, holder, wait=wait)
        step.note(f"taken by {holder.who}" + (f" for release {release}" if release else ""))
    try:
        yield holder
    except BaseException:
        _unlock(run, target, holder, failing=True)
        raise
    _unlock(run, target, holder, failing=False)


def _unlock(run: Run, target: Host, holder: lock.LockHolder, failing: bool) -> None:
    """Release the lock while it is ours. When that fails (the connection is gone), say who holds
    it and how to free it; the run's own error, if any, stays the one reported."""
    try:
        try:
            released = lock.release_if_ours(target, holder)
        except ConnectionLost:
            # The connection that just dropped can still look open for a moment (paramiko has not
            # noticed): once more on a fresh one (CI: a drop mid-push left the lock held).
            target.close()
            target.open()
            released = lock.release_if_ours(target, holder)
        if released:
            run.log("deploy lock released")
        else:
            run.warn("the deploy lock was no longer ours (force-released?); left it to its current holder "
                     f"({lock.status(target)})")
    except OperatorError as exc:
        run.warn(f"the deploy lock {target.layout.lock_dir} on {target.host} is still held by {holder.describe()}: "
                 f"releasing it failed ({exc.message}); once this run has ended, `inv lock.release --if-stale` "
                 "releases it")
        if not failing:
            raise


def release_env(run: Run, target: Host, settings: Settings) -> tuple[str, list[str]]:
    """The env file for the release about to be pushed: the operator's stack values, and what
    the deployer fills from the live release's (DJANGO_SECRET_KEY_FALLBACKS: deploy/rotation.py);
    and the secrets changed since the live release, named in the run, never their values."""
    live = release_env_values(run, target)
    new = {k: (v.reveal() if isinstance(v, Secret) else str(v)) for k, v in settings.stack_env.items()}
    rotated = rotation.changed(live, new, {k for k in new if is_secret_name(k)})
    if rotated:
        run.record("secrets_rotated", rotated)
        run.log("secrets changed since the live release: " + "; ".join(
            f"{n} ({rotation.RESTARTS.get(n, 'the services that use it start with the new value')})" for n in rotated))
    overrides = {}
    for key, name in rotation.FALLBACK_OF.items():
        if name in new:
            overrides[name] = rotation.fallbacks(live, new, key)
    if rotation.LOGIN in new:
        overrides[rotation.LOGIN] = rotation.app_login(live, new)
    if edge_config.DIR_VAR in new:
        overrides[edge_config.DIR_VAR] = edge_config.folder(target.layout.base)
    return settings.stack_env_file(overrides), rotated


def release_env_values(run: Run, target: Host, release_id: str | None = None) -> dict[str, str]:
    """A release's env file as values (the live one's by default; empty when there is none).
    Its secrets join the redactor: a value rotated out is masked wherever it appears."""
    path = target.layout.env_file(release_id) if release_id else target.layout.current_env
    res = target.run(f"cat {cmd.q(path)} 2>/dev/null || true", "reading a release's env")
    values = rotation.parse(res.stdout)
    for name, value in values.items():
        if is_secret_name(name):
            run.registry.add_value(value)
    return values


def push(run: Run, target: Host, local: sync.LocalRelease, env_content: str,
         min_free_mb: int = 0) -> sync.PushResult:
    """The release's files (only what changed since ``current``) and its env file (0600), once
    ``min_free_mb`` is free on the droplet."""
    with run.step("push") as step:
        result = sync.push(target, local, env_content, by=run.operator, min_free_mb=min_free_mb)
        summary = {"release_id": result.release_id, "previous_release": result.previous_release,
                   "bytes_sent": result.bytes_sent, "files_total": result.files_total,
                   "changed_count": len(result.changed), "removed_count": len(result.removed),
                   "changed_services": result.changed_services}
        run.record("push", summary)
        run.artifacts.write_json("push.json", {**run.details["push"], "changed": result.changed,
                                               "removed": result.removed,
                                               "env_file": target.layout.env_file(result.release_id)})
        step.note(f"release {result.release_id}: {len(result.changed)} changed, {len(result.removed)} removed,"
                  f" {result.bytes_sent} bytes sent")
        if result.drift.paths:
            run.record("drift", {"release": result.previous_release, **_plain_drift(result.drift)})
            step.warn(f"{step.step.message}; the live release {result.previous_release} had been changed on the "
                      f"droplet outside stackdeploy ({result.drift.describe()}): the new release ships the "
                      "deployer's copies")
    return result


def _plain_drift(found: sync.Drift) -> dict[str, list[str]]:
    return {"changed": found.changed, "missing": found.missing, "extra": found.extra}


def check_drift(run: Run, target: Host) -> sync.Drift | None:
    """Does the live release still hold what was deployed? (`inv verify`)"""
    with run.step("drift") as step:
        current = sync.current_release(target)
        manifest = (sync.read_release_meta(target, current) or {}).get("manifest") if current else None
        if not manifest:
            step.note("no live release with a manifest to compare")
            return None
        found = sync.drift(target, current, manifest)
        text = "\n".join(f"{kind} {path}" for kind, paths in _plain_drift(found).items() for path in paths)
        run.artifacts.write_text(f"{target.artifact_prefix}release-drift.txt",
                                 f"# release {current} compared with its manifest ({len(manifest)} files)\n"
                                 + (text + "\n" if text else "no difference\n"))
        run.record("drift", {"release": current, **_plain_drift(found)})
        if found.paths:
            step.warn(f"release {current} was changed on the droplet outside stackdeploy: {found.describe()}; "
                      "`inv deploy --update-only` ships the deployer's copies again")
        else:
            step.note(f"release {current} matches its manifest ({len(manifest)} files)")
    return found


def keep_diagnostics(run: Run, target: Host, exc: compose.ComposeError) -> None:
    for name, text in (exc.diagnostics or {}).items():
        run.artifacts.write_text(f"{target.artifact_prefix}diagnostics/{name}", text)


def build(run: Run, target: Host, spec: compose.ComposeSpec, pushed: sync.PushResult,
          compose_file: dict, changed: set[str] | None) -> dict[str, dict[str, str]]:
    """Build the new release's images while the live release keeps serving; returns its image map
    (service -> ref and id), also kept in the release. ``changed`` None: build every service."""
    release_id = pushed.release_id
    with run.step("build") as step:
        previous = {name: entry["ref"] for name, entry in pushed.previous_images.items() if entry.get("ref")}
        present = images.lookup(target, previous.values())
        plan = images.plan(compose_file, spec.project, release_id, previous, changed, present)
        target.put(target.layout.images_file(release_id), images.override(plan.refs, release_id).encode())
        try:
            with interruptible(run, target, release_id, pushed.previous_release), \
                    run.watching("build", progress.BuiltImages(target, {n: plan.refs[n] for n in plan.build})):
                compose.build(target, spec, release_id, plan.build)
        except compose.ComposeError as exc:
            keep_diagnostics(run, target, exc)
            sync.record_outcome(target, release_id, "failed")
            if pushed.previous_release:
                exc.message = f"{exc.message}; still serving release {pushed.previous_release}"
            raise
        built = images.lookup(target, {plan.refs[n] for n in plan.build})
        refs = images.keep_unchanged(plan, built, previous, present)
        ids = {**present, **built}
        unused = {plan.refs[n] for n in plan.build} - set(refs.values())
        if unused:  # identical to what runs now: drop the extra tag
            target.run(cmd.remove_images(unused), "removing unneeded image tags", check=False)
        image_map = {name: {"ref": ref, "id": ids.get(ref, images.MISSING)} for name, ref in refs.items()}
        sync.set_images(target, release_id, image_map, images.override(refs, release_id))
        changed_now = sorted(n for n in refs if refs[n] != previous.get(n))
        run.record("build", {"built": sorted(plan.build), "reasons": plan.reasons, "new_images": changed_now})
        step.note(f"built {', '.join(sorted(plan.build))}; new images for {', '.join(changed_now) or 'no service'}"
                  if plan.build else "nothing to build: every image is on the droplet")
    return image_map


def switch(run: Run, target: Host, release_id: str) -> str:
    with run.step("switch") as step:
        sync.switch(target, release_id)
        step.note(f"current -> {release_id}")
    return release_id


@contextmanager
def interruptible(run: Run, target: Host, release_id: str, live: str | None,
                   restore: Callable[[], str] | None = None) -> Iterator[None]:
    """Ctrl-C or SIGTERM inside the block leaves a defined state: the release is recorded as
    interrupted and, once the cutover had begun, the live release is started again. A second
    Ctrl-C during that cleanup stops it (the run then says the state is unknown)."""
    try:
        yield
    except (KeyboardInterrupt, Terminated):
        try:
            sync.record_outcome(target, release_id, "interrupted")
            if restore is not None and live:
                run.warn(f"interrupted during the cutover; restoring release {live}: {restore()}")
            elif live:
                run.record("live_release", live)
                run.warn(f"interrupted before the cutover: release {live} is still serving")
        except (KeyboardInterrupt, Terminated, OperatorError) as again:
            run.record("live_release", None)
            run.warn(f"interrupted again while cleaning up ({type(again).__name__}): which release serves is "
                     "unknown; run `inv verify`, then `inv deploy --update-only` or `inv rollback`")
        raise


def prune(run: Run, targets: Sequence[Host], keep: int, dry_run: bool = False, built: bool = True
          ) -> tuple[remote_prune.Doomed, list[remote_prune.NodePlan]]:
    """The releases beyond ``keep`` on the leader (``targets[0]``), and on every node the images
    only they used, dangling images and old build cache: after each healthy release (a busy
    droplet must not fill its disk) and on demand (`inv prune`). ``dry_run``: what would go.
    ``built`` False (the release built no image) and no release beyond ``keep``: nothing new
    to prune, and the nodes are not asked (0.3 s of a no-change deploy); what an earlier failed
    run left waits for the next build or `inv prune`."""
    gone = remote_prune.doomed(targets[0], keep)
    if not built and not gone.releases and not dry_run:
        return gone, []
    plans = []
    for k, target in enumerate(targets):
        node = remote_prune.plan(target, gone, releases=k == 0)
        plans.append(node)
        prefix = f"{target.name}: " if len(targets) > 1 else ""
        if dry_run:
            for line in prune_lines(node):
                run.log(prefix + "would remove " + line)
            continue
        done = remote_prune.apply(target, node)
        if node.releases or node.images:
            run.log(f"{prefix}pruned " + (f"old releases and their images: {', '.join(node.releases)}" if node.releases
                                          else f"the images of old releases: {', '.join(node.images)}"))
        for what, line in done.reclaimed.items():
            run.log(f"{prefix}pruned {what}" + (f": {line}" if line else ""))
        for what, tail in done.failed.items():
            run.warn(f"{prefix}pruning {what} failed (nothing else is affected): {tail}")
    return gone, plans


def prune_lines(node: remote_prune.NodePlan) -> list[str]:
    """What pruning takes from a node, one line per kind, for the operator."""
    lines = [f"{len(node.releases)} release folder(s): {', '.join(node.releases)}"] if node.releases else []
    lines += [f"{len(node.images)} image tag(s): {', '.join(node.images)}"] if node.images else []
    lines += [f"{len(node.dangling)} dangling image(s): {', '.join(node.dangling)}"] if node.dangling else []
    lines.append(f"build cache unused for {cmd.BUILDER_CACHE_KEEP_HOURS} h"
                 + (f" (reclaimable in all: {node.build_cache})" if node.build_cache else ""))
    return lines


def run_checks(run: Run, run_checks_edge, target: checks.PublicSite, config: checks.ChecksConfig) -> checks.ChecksReport:
    """The outside-in checks; their files land in http/, their results in run.json."""
    with run.step("checks") as step:
        report = run_checks_edge(target, config)
        for rel, text in report.files.items():
            run.artifacts.write_text(rel, text)
        run.add_checks([r.to_dict() for r in report.results], first=True)
        failed = report.by_status("fail")
        warned = report.by_status("warn")
        summary = f"{len(report.results) - len(failed) - len(warned)} pass, {len(warned)} warn, {len(failed)} fail"
        if failed:
            step.step.status = "failed"
            step.note(summary + ": " + ", ".join(r.name for r in failed))
        elif warned:
            step.warn(summary + ": " + ", ".join(r.name for r in warned))
        else:
            step.note(summary)
    return report


def collect(run: Run, target: Host, spec: remote_collect.CollectSpec,
            ready: frozenset[str] = frozenset()) -> remote_collect.CollectResult:
    """``ready``: containers this run's cutover saw answer their own healthcheck moments ago."""
    with run.step("collect") as step:
        result = remote_collect.collect(target, spec, run.artifacts.write_text, run.in_this_step(), ready)
        run.record("services", result.services)
        run.record("current_release", result.current_release)
        unread_services(run, target.name, result)
        if result.failed:
            step.warn(f"{len(result.failed)} item(s) could not be collected: " + ", ".join(sorted(result.failed)))
        else:
            step.note(f"{len(result.written)} files")
    return result


def unread_services(run: Run, where: str, result: remote_collect.CollectResult) -> None:
    """Services that could not be listed were not found down either: the run is partial."""
    if result.unread is not None:
        run.mark_partial(f"the services' state on {where}",
                         f"listing them failed ({result.unread}), so none could be judged running or "
                         "healthy; run inv verify again (inv status shows what runs)")


def not_serving(services: list[dict], retiring: frozenset[str] = frozenset()) -> list[str]:
    """"service (state)" for each collected container that is not running, or whose
    healthcheck is not passing (a container without a healthcheck has no health). ``retiring``:
    old containers being drained and removed, whatever state they are in."""
    out = []
    for s in services:
        if any(compose.same_container(str(s.get("id") or ""), c) for c in retiring):
            continue
        if s.get("state") != "running":
            out.append(f"{s.get('service')} ({s.get('state')})")
        elif s.get("health") not in ("", "healthy"):
            out.append(f"{s.get('service')} ({s.get('health')})")
    return out


def list_releases(run: Run, target: Host) -> list[sync.ReleaseInfo]:
    with run.step("releases") as step:
        found = sync.list_releases(target)
        step.note(f"{len(found)} releases")
    return found


def plan_provision(run: Run, cloud_port: CloudPort, spec: cloud.CloudSpec,
                   account: cloud.AccountInfo) -> cloud.ProvisionPlan:
    """What provision would do, from GET requests only (`inv deploy --plan`)."""
    with run.step("plan-provision") as step:
        result = cloud_port.plan_provision(spec, on_event=lambda level, msg: run.log(msg), account=account)
        d = result.droplet
        if d is not None:
            run.target = {"name": d.name, "region": d.region, "ip": d.public_ipv4, "droplet_id": d.id}
        step.note(("found" if d else "would create") + f" droplet {result.name}; firewall {result.firewall.action};"
                  f" {len(result.dns.records_changed)} DNS record(s) to change")
        if result.warnings:
            step.warn(step.step.message + "; " + "; ".join(result.warnings))
    return result


def plan_release(run: Run, target: Host, local: sync.LocalRelease, spec: compose.ComposeSpec, env_content: str,
                 update_only: bool) -> deploy_plan.ReleasePlan:
    """What shipping ``local`` would do on ``target``, from commands that only read (no lock taken)."""
    with run.step("plan-release") as step:
        live = deploy_plan.read_live(target, local, spec.compose_files)
        result = deploy_plan.release_plan(target.name, local, live, spec, env_content, update_only)
        step.note(f"{len(result.changed)} file(s) changed, {len(result.removed)} removed; build "
                  f"{', '.join(result.build) or 'nothing'}; recreate {', '.join(result.recreate) or 'nothing'}")
        if result.lock:
            step.warn(f"{step.step.message}; the deploy lock is held by {result.lock}")
    return result
