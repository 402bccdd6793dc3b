"""provision -> push -> up -> verify -> collect. Each step takes what it needs and returns a
value; the Run records it. Full deploy and update-only differ only in which steps run."""
from __future__ import annotations

import posixpath
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterator

from deploy.errors import ConfigError, DeployError, LockHeldError, operator_error
from deploy.run import Run
from deploy.settings import Settings, require_stack_keys

NONPROD_OVERRIDE = "compose.nonprod.yml"


# -- small pure helpers ----------------------------------------------------------------------

def _data(value: Any) -> Any:
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, set):
        return sorted(value)
    return value


def _public_key(settings: Settings) -> str:
    key = settings.ssh_key_path
    pub = Path(str(key) + ".pub")
    if not key.is_file():
        raise ConfigError("SSH_KEY_PATH", f"points to {key}, which does not exist",
                          f"create a key with: ssh-keygen -t ed25519 -f {key} -N '' (or set SSH_KEY_PATH to your key)")
    if not pub.is_file():
        raise ConfigError("SSH_KEY_PATH", f"has no public key beside it ({pub})",
                          f"write it with: ssh-keygen -y -f {key} > {pub}")
    return pub.read_text(encoding="utf-8").strip()


def cloud_spec(settings: Settings, need_key: bool = True) -> Any:
    from deploy import cloud

    s = settings
    return cloud.CloudSpec(
        token=s.token.reveal() if s.token else "",
        droplet_name=s["DROPLET_NAME"],
        region=s["DROPLET_REGION"],
        size=s["DROPLET_SIZE"],
        image=s["DROPLET_IMAGE"],
        tags=tuple(s["DROPLET_TAGS"] or ()),
        ssh_public_key=_public_key(s) if need_key else "",
        ssh_key_name=f"{s.project}-{s['DEPLOY_USER']}",
        deploy_user=s["DEPLOY_USER"],
        domain=s["DOMAIN"],
        subdomains=tuple(s["SUBDOMAINS"] or ()),
        firewall_enabled=not s["SKIP_ALLOWLIST"],
        operator_ip_url=s["OPERATOR_IP_URL"],
        operator_ip_timeout=s["OPERATOR_IP_TIMEOUT"],
        extra_ssh_cidrs=tuple(s["ALLOWLIST_EXTRA_CIDRS"] or ()),
        request_timeout=s["DO_REQUEST_TIMEOUT"],
        active_timeout=s["DO_ACTIVE_TIMEOUT"],
        ssh_wait_timeout=s["DO_SSH_WAIT_TIMEOUT"],
        max_retries=s["DO_MAX_RETRIES"],
        endpoint=s["DIGITALOCEAN_END_POINT"],
        ssh_port=s["SSH_PORT"],
    )


def ssh_target(settings: Settings, ip: str) -> Any:
    from remote.connection import SshTarget

    return SshTarget(host=ip, user=settings["DEPLOY_USER"], key_path=settings.ssh_key_path,
                     port=settings["SSH_PORT"], known_hosts_path=settings.known_hosts_path,
                     connect_timeout=settings["SSH_CONNECT_TIMEOUT"], retries=settings["SSH_RETRIES"])


def compose_files(settings: Settings) -> tuple[str, ...]:
    """Relative to the release folder; the non-production override only outside production."""
    files = ["compose.yml"]
    if settings["DEPLOY_ENV"] != "production" and (settings.stack_dir / NONPROD_OVERRIDE).is_file():
        files.append(NONPROD_OVERRIDE)
    return tuple(files)


def compose_spec(settings: Settings) -> Any:
    from remote.compose import ComposeSpec

    return ComposeSpec(project=settings.project, base=settings.remote_base, compose_files=compose_files(settings),
                       env_file=posixpath.join(settings.remote_base, "shared", ".env"),
                       wait_timeout=int(settings["HEALTH_TIMEOUT"]))


def compose_target(settings: Settings) -> Any:
    return compose_spec(settings).target()


# -- steps -----------------------------------------------------------------------------------

def check_token(run: Run, settings: Settings) -> Any:
    """Fail fast: a missing or rejected token stops the run before anything else happens."""
    from deploy import cloud

    with run.step("token-check") as step:
        settings.require("DIGITALOCEAN_TOKEN")  # in the step: a missing token is a failed token-check row
        spec = cloud_spec(settings, need_key=False)
        try:
            account = cloud.check_token(spec)
        except cloud.CloudError as exc:
            raise operator_error(exc) from None  # TokenRejected keeps its own exit code
        step.note(f"account {account.email}")
    return account


def provision(run: Run, settings: Settings) -> Any:
    """Droplet, firewall allowlist and DNS (token already checked)."""
    from deploy import cloud

    spec = cloud_spec(settings)
    with run.step("provision") as step:
        result = cloud.provision(spec, on_event=lambda level, msg: run.warn(msg) if level == "warning" else run.log(msg))
        d = result.droplet
        run.target = {"name": d.name, "region": d.region, "ip": d.public_ipv4, "droplet_id": d.id}
        run.details["provision"] = _data(result)
        step.note(("created" if d.created else "found") + f" droplet {d.name} ({d.public_ipv4 or 'no public IPv4'});"
                  f" firewall {result.firewall.status}; dns {result.dns.status}")
        if result.warnings:
            step.warn(step.step.message + "; " + "; ".join(result.warnings))
    run.artifacts.write_json("provision.json", _data(result))
    return result


def discover(run: Run, settings: Settings, required: bool) -> str | None:
    """The droplet's public IPv4: DROPLET_IP, else found by name through the API (read-only).

    ``required`` (deploy): every failure is an error. Otherwise (verify/collect): the run goes
    on without remote steps and is marked partial, with the reason and the fix.
    """
    from deploy import cloud

    if settings["DROPLET_IP"]:
        run.target = {"name": settings["DROPLET_NAME"], "region": None, "ip": settings["DROPLET_IP"]}
        run.skip_step("discover", f"DROPLET_IP={settings['DROPLET_IP']} given")
        return settings["DROPLET_IP"]
    try:
        check_token(run, settings)
    except DeployError as exc:
        if required:
            raise
        run.mark_partial("remote verification", f"{exc.message}; set DROPLET_IP or fix the token ({exc.hint})")
        return None
    with run.step("discover") as step:
        try:
            droplet = cloud.find_droplet(cloud_spec(settings, need_key=False))
        except cloud.CloudError as exc:
            if required:
                raise
            step.warn(str(exc))
            droplet = None
        if droplet is None:
            why = f"no droplet named {settings['DROPLET_NAME']} in the account"
            if required:
                raise DeployError(why, "run a full `inv deploy` first (update-only never creates a droplet)")
            step.warn(why)
            run.mark_partial("remote verification", f"{why}; check DROPLET_NAME or deploy first")
            return None
        run.target = {"name": droplet.name, "region": droplet.region, "ip": droplet.public_ipv4, "droplet_id": droplet.id}
        if not droplet.public_ipv4:
            step.warn("the droplet has no public IPv4")
            if required:
                raise DeployError(f"droplet {droplet.name} has no public IPv4 address",
                                  "check the droplet in the DigitalOcean console")
            run.mark_partial("remote verification", "the droplet has no public IPv4; set DROPLET_IP")
            return None
        step.note(f"{droplet.name} at {droplet.public_ipv4}")
        return droplet.public_ipv4


def connect(run: Run, settings: Settings, ip: str) -> Any:
    from remote.connection import connect as ssh_connect

    with run.step("connect") as step:
        conn = ssh_connect(ssh_target(settings, ip))
        step.note(f"{settings['DEPLOY_USER']}@{ip}")
    return conn


def bootstrap(run: Run, settings: Settings, conn: Any) -> None:
    """Full deploy only: the release root exists and is ours, Docker and Compose answer."""
    from remote import commands as cmd

    with run.step("bootstrap") as step:
        res = conn.run(cmd.ensure_base_dir(settings.remote_base), hide=True, warn=True, in_stream=False)
        if res.exited != 0:
            raise DeployError(f"cannot create {settings.remote_base} on the droplet as {settings['DEPLOY_USER']}: "
                              f"{(res.stderr or res.stdout).strip()[-300:]}",
                              f"give {settings['DEPLOY_USER']} passwordless sudo (cloud-init does) or create the folder "
                              f"owned by that user; REMOTE_BASE_DIR chooses another place")
        docker = conn.run(cmd.docker_ready(), hide=True, warn=True, in_stream=False)
        if docker.exited != 0:
            raise DeployError(f"Docker is not usable by {settings['DEPLOY_USER']} on the droplet: "
                              f"{(docker.stderr or docker.stdout).strip()[-300:]}",
                              "cloud-init installs Docker Engine and the Compose plugin and adds the user to the docker "
                              "group; wait for it to finish (cloud-init status --wait) and rerun")
        versions = docker.stdout.split()
        step.note(f"{settings.remote_base} {res.stdout.strip()}; docker {versions[0] if versions else '?'}, "
                  f"compose {versions[1] if len(versions) > 1 else '?'}")


@contextmanager
def deploy_lock(run: Run, settings: Settings, conn: Any, release: str) -> Iterator[None]:
    from remote import lock

    holder = lock.LockHolder.here(release, run.command)
    with run.step("lock") as step:
        try:
            lock.acquire(conn, settings.remote_base, holder, wait=settings["LOCK_WAIT"])
        except lock.LockHeld as exc:
            raise LockHeldError(exc.message, exc.hint) from None
        step.note(f"taken by {holder.who}")
    try:
        yield
    finally:
        if lock.release_if_ours(conn, settings.remote_base, holder):
            run.log("deploy lock released")
        else:
            run.warn("the deploy lock was no longer ours (force-released?); left it to its current holder "
                     f"({lock.status(conn, settings.remote_base)})")


def push(run: Run, settings: Settings, conn: Any) -> Any:
    from remote import sync

    require_stack_keys(settings)
    with run.step("push") as step:
        env_path = sync.write_env(conn, settings.remote_base, settings.stack_env_file())
        result = sync.push(conn, settings.remote_base, settings.stack_dir)
        run.details["push"] = {k: _data(v) for k, v in asdict(result).items() if k not in ("changed", "removed")}
        run.details["push"]["changed_count"] = len(result.changed)
        run.details["push"]["removed_count"] = len(result.removed)
        run.artifacts.write_json("push.json", {**run.details["push"], "changed": result.changed, "removed": result.removed,
                                               "env_file": env_path})
        step.note(f"release {result.release_id}: {len(result.changed)} changed, {len(result.removed)} removed,"
                  f" {result.bytes_sent} bytes sent")
    return result


def local_compose(settings: Settings) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((settings.stack_dir / "compose.yml").read_text(encoding="utf-8")) or {}


def switch_and_up(run: Run, settings: Settings, conn: Any, release_id: str, services_to_build: set[str] | None,
                  services_to_recreate: set[str] = frozenset()) -> Any:
    from remote import compose, sync

    with run.step("switch"):
        sync.switch(conn, settings.remote_base, release_id)
    spec = compose_spec(settings)
    with run.step("up") as step:
        try:
            result = compose.up(conn, spec, services_to_build=services_to_build,
                                services_to_recreate=services_to_recreate)
        except compose.ComposeError as exc:
            for name, text in (exc.diagnostics or {}).items():
                run.artifacts.write_text(f"remote/diagnostics/{name}", text)
            sync.record_outcome(conn, settings.remote_base, release_id, "failed")
            raise DeployError(f"service {exc.service} did not become healthy: {exc.reason}",
                              "see remote/diagnostics/ in the run folder for its logs and health output") from None
        run.details["up"] = _data(result)
        step.note(f"built {sorted(result.rebuilt) if result.rebuilt else 'nothing'};"
                  f" recreated {sorted(result.recreated) if result.recreated else 'nothing'}")
    sync.record_outcome(conn, settings.remote_base, release_id, "success")
    kept = sync.prune(conn, settings.remote_base, settings["RELEASES_KEEP"])
    if kept:
        run.log(f"pruned old releases: {', '.join(kept)}")
    return result


def run_checks(run: Run, settings: Settings, ip: str) -> Any:
    from deploy import checks

    rpm = int(str(settings.stack_env.get("RATE_LIMIT_API_RPM") or 60))
    with run.step("checks") as step:
        report = checks.run_checks(
            checks.CheckTarget(ip=ip, domain=settings["DOMAIN"], deploy_env=settings["DEPLOY_ENV"]),
            checks.ChecksConfig(samples=settings["CHECK_SAMPLES"], timeout=settings["CHECK_TIMEOUT"],
                                p95_budget_s=settings["CHECK_P95_BUDGET"], rate_limit_burst=settings["CHECK_RATE_LIMIT"],
                                rate_limit_requests=checks.rate_limit_burst_size(rpm)))
        for rel, text in report.files.items():
            run.artifacts.write_text(rel, text)
        run.checks = [r.to_dict() for r in report.results]
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


def collect(run: Run, settings: Settings, conn: Any) -> Any:
    from remote.collect import CollectSpec, collect as collect_remote

    with run.step("collect") as step:
        result = collect_remote(conn, CollectSpec(target=compose_target(settings), domain=settings["DOMAIN"],
                                                  base=settings.remote_base, edge_network=f"{settings.project}_edge"),
                                run.artifacts.write_text)
        run.details["services"] = result.services
        run.details["current_release"] = result.current_release
        if result.failed:
            step.warn(f"{len(result.failed)} item(s) could not be collected: " + ", ".join(sorted(result.failed)))
        else:
            step.note(f"{len(result.written)} files")
    return result


def verify_and_collect(run: Run, settings: Settings, ip: str | None, conn: Any = None) -> None:
    """Checks from here, then remote state over SSH. Missing pieces make the set partial."""
    from remote.collect import ssh_reachable

    if ip is None:
        run.skip_step("checks", "no droplet IP")
        run.skip_step("collect", "no droplet IP")
        return
    settings.require("DOMAIN")
    report = run_checks(run, settings, ip)
    if conn is None:
        why = ssh_reachable(ip, settings["SSH_PORT"], timeout=settings["SSH_CONNECT_TIMEOUT"])
        if why is None:
            try:
                conn = connect(run, settings, ip)
            except DeployError as exc:
                why = str(exc)
        if conn is None:
            run.skip_step("collect", why)
            run.mark_partial("remote collection", f"{why}. Check that SSH_KEY_PATH's public key is on the droplet "
                                                  f"for {settings['DEPLOY_USER']} and that port {settings['SSH_PORT']} "
                                                  "is allowed from this machine (inv provision updates the allowlist)")
    if conn is not None:
        collect(run, settings, conn)
    failed = report.by_status("fail")
    if failed:
        raise DeployError(f"{len(failed)} check(s) failed: " + ", ".join(r.name for r in failed),
                          "each check's observed value and message are in summary.md and http/ in the run folder")


# -- tasks -----------------------------------------------------------------------------------

def provision_only(run: Run, settings: Settings) -> None:
    settings.require("DIGITALOCEAN_TOKEN", "DOMAIN")
    check_token(run, settings)
    provision(run, settings)


def deploy(run: Run, settings: Settings, update_only: bool = False) -> None:
    settings.require("DIGITALOCEAN_TOKEN", "DOMAIN")
    require_stack_keys(settings)  # before touching the cloud: nothing is created for a deploy that cannot start
    if update_only:
        ip = discover(run, settings, required=True)
    else:
        check_token(run, settings)
        ip = provision(run, settings).droplet.public_ipv4
        if not ip:
            raise DeployError("the droplet has no public IPv4 address, so nothing can be shipped",
                              "check the droplet's networking in the DigitalOcean console, then rerun")
    conn = connect(run, settings, ip)
    try:
        if not update_only:
            bootstrap(run, settings, conn)
        try:
            with deploy_lock(run, settings, conn, release=_next_release_id(settings)):
                pushed = push(run, settings, conn)
                # Update-only rebuilds just the services whose build inputs changed (None: all).
                services = pushed.changed_services if update_only else None
                switch_and_up(run, settings, conn, pushed.release_id, services, _mount_changes(settings, pushed))
        except DeployError:
            # The stack may be half up: its state is what the operator needs to diagnose it.
            _collect_best_effort(run, settings, conn)
            raise
        verify_and_collect(run, settings, ip, conn)
    finally:
        conn.close()


def _mount_changes(settings: Settings, pushed: Any) -> set[str]:
    """Services reading a changed bind-mounted file (Traefik's config): they must be recreated."""
    from remote import sync

    if not pushed.previous_release:
        return set()  # first release: every container is new anyway
    return sync.services_for_mounts(local_compose(settings), pushed.changed + pushed.removed)


def _next_release_id(settings: Settings) -> str:
    from remote import sync

    return sync.new_release_id(sync.local_manifest(settings.stack_dir))


def _collect_best_effort(run: Run, settings: Settings, conn: Any) -> None:
    try:
        collect(run, settings, conn)
    except Exception as exc:  # noqa: BLE001 - the original failure is what gets reported
        run.warn(f"could not collect remote state after the failure: {exc}")


def push_only(run: Run, settings: Settings) -> None:
    ip = discover(run, settings, required=True)
    conn = connect(run, settings, ip)
    try:
        with deploy_lock(run, settings, conn, release="(push)"):
            pushed = push(run, settings, conn)
            with run.step("switch"):
                from remote import sync

                sync.switch(conn, settings.remote_base, pushed.release_id)
    finally:
        conn.close()


def up_only(run: Run, settings: Settings) -> None:
    from remote import sync

    ip = discover(run, settings, required=True)
    conn = connect(run, settings, ip)
    try:
        with deploy_lock(run, settings, conn, release="(up)"):
            current = sync.current_release(conn, settings.remote_base)
            if current is None:
                raise DeployError("no release on the droplet yet", "run `inv deploy` (or `inv push`) first")
            switch_and_up(run, settings, conn, current, None)
    finally:
        conn.close()


def verify_only(run: Run, settings: Settings) -> None:
    ip = discover(run, settings, required=False)
    verify_and_collect(run, settings, ip)


def collect_only(run: Run, settings: Settings) -> None:
    ip = discover(run, settings, required=False)
    if ip is None:
        run.skip_step("collect", "no droplet IP")
        return
    conn = connect(run, settings, ip)
    try:
        collect(run, settings, conn)
    finally:
        conn.close()


def rollback(run: Run, settings: Settings, release: str | None) -> None:
    """Switch `current` back (previous release, or a named one) and bring it up."""
    from remote import sync

    ip = discover(run, settings, required=True)
    conn = connect(run, settings, ip)
    try:
        with deploy_lock(run, settings, conn, release=release or "(previous)"):
            current = sync.current_release(conn, settings.remote_base)
            with run.step("choose-release") as step:
                target = release or sync.previous_release(conn, settings.remote_base)
                step.note(f"{current} -> {target}")
            # Images are rebuilt from the old release's sources (layer cache makes it quick).
            switch_and_up(run, settings, conn, target, None, sync.services_for_mounts(local_compose(settings), None))
            if current and current != target:
                sync.record_outcome(conn, settings.remote_base, current, "rolled-back")
        verify_and_collect(run, settings, ip, conn)
    finally:
        conn.close()


def releases(run: Run, settings: Settings) -> list[Any]:
    from remote import sync

    ip = discover(run, settings, required=True)
    conn = connect(run, settings, ip)
    try:
        with run.step("releases") as step:
            found = sync.list_releases(conn, settings.remote_base)
            step.note(f"{len(found)} releases")
    finally:
        conn.close()
    lines = [f"{'*' if r.current else ' '} {r.id}  created {r.created or '?'}  outcome {r.outcome or '-'}" for r in found]
    run.artifacts.write_text("releases.txt", "\n".join(lines) + "\n")
    for line in lines:
        run.console.print(line)
    return found


def lock_status(run: Run, settings: Settings) -> None:
    from remote import lock

    ip = discover(run, settings, required=True)
    conn = connect(run, settings, ip)
    try:
        holder = lock.status(conn, settings.remote_base)
    finally:
        conn.close()
    run.details["lock"] = holder
    run.log(f"deploy lock: held by {holder}" if holder else "deploy lock: free")


def lock_release(run: Run, settings: Settings) -> None:
    from remote import lock

    ip = discover(run, settings, required=True)
    conn = connect(run, settings, ip)
    try:
        holder = lock.status(conn, settings.remote_base)
        lock.release(conn, settings.remote_base)
    finally:
        conn.close()
    run.log(f"deploy lock released (was held by {holder})" if holder else "deploy lock was already free")
