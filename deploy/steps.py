"""The steps of a run. Each takes the Run, a Target (or the cloud edge) and plain values, does
one thing, records its typed result on the Run and returns it. No step reads Settings (wiring
does) and none reaches into another step's handle.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from deploy import checks, cloud
from deploy.errors import OperatorError
from deploy.run import Run
from deploy.wiring import CloudPort, Host
from remote import collect as remote_collect
from remote import commands as cmd
from remote import compose, lock, sync
from remote.target import Target


@dataclass(frozen=True)
class BootstrapResult:
    base: str
    base_state: str       # ready | created
    docker: str
    compose: str


class CheckFailures(OperatorError):
    """Outside-in checks failed (the deploy itself may have worked)."""


def token_check(run: Run, cloud_port: CloudPort, spec: cloud.CloudSpec) -> cloud.AccountInfo:
    """Fail fast: a missing or rejected token stops the run before anything else happens."""
    with run.step("token-check") as step:
        account = cloud_port.check_token(spec)
        step.note(f"account {account.email}")
    return account


def provision(run: Run, cloud_port: CloudPort, spec: cloud.CloudSpec,
              account: cloud.AccountInfo) -> cloud.ProvisionResult:
    """Droplet, firewall allowlist and DNS (the token is already checked)."""
    with run.step("provision") as step:
        result = cloud_port.provision(
            spec, on_event=lambda level, msg: run.warn(msg) if level == "warning" else run.log(msg),
            account=account)
        d = result.droplet
        run.target = {"name": d.name, "region": d.region, "ip": d.public_ipv4, "droplet_id": d.id}
        run.record("provision", result)
        step.note(("created" if d.created else "found") + f" droplet {d.name} ({d.public_ipv4 or 'no public IPv4'});"
                  f" firewall {result.firewall.status}; dns {result.dns.status}")
        if result.warnings:
            step.warn(step.step.message + "; " + "; ".join(result.warnings))
    run.artifacts.write_json("provision.json", run.details["provision"])
    return result


def discover(run: Run, cloud_port: CloudPort, spec: cloud.CloudSpec) -> Host:
    """Find the droplet by name through the API (read-only). Raises when there is none."""
    with run.step("discover") as step:
        droplet = cloud_port.find_droplet(spec)
        if droplet is None:
            raise OperatorError(f"no droplet named {spec.droplet_name} in the account",
                                "run a full `inv deploy` first (update-only never creates a droplet), "
                                "or check DROPLET_NAME")
        run.target = {"name": droplet.name, "region": droplet.region, "ip": droplet.public_ipv4,
                      "droplet_id": droplet.id}
        if not droplet.public_ipv4:
            raise OperatorError(f"droplet {droplet.name} has no public IPv4 address",
                                "check the droplet's networking in the DigitalOcean console, or set DROPLET_IP")
        step.note(f"{droplet.name} at {droplet.public_ipv4}")
    return Host(name=droplet.name, ip=droplet.public_ipv4, droplet_id=droplet.id, region=droplet.region)


def connect(run: Run, target: Target, quick: bool = False) -> Target:
    with run.step("connect") as step:
        target.open(quick=quick)
        step.note(f"{target.name} at {target.host}")
    return target


def bootstrap(run: Run, target: Target) -> BootstrapResult:
    """Full deploy only: the release root exists and is ours, Docker and Compose answer."""
    base = target.layout.base
    with run.step("bootstrap") as step:
        res = target.run(cmd.ensure_base_dir(target.layout), f"creating {base}",
                         hint="give the deploy user passwordless sudo (cloud-init does) or create the folder "
                              "owned by that user; REMOTE_BASE_DIR chooses another place")
        docker = target.run(cmd.docker_ready(), "checking Docker and Compose",
                            hint="cloud-init installs Docker Engine and the Compose plugin and adds the user to "
                                 "the docker group; wait for it to finish (cloud-init status --wait) and rerun")
        versions = docker.stdout.split() + ["?", "?"]
        result = BootstrapResult(base=base, base_state=res.stdout.strip(), docker=versions[0], compose=versions[1])
        run.record("bootstrap", result)
        step.note(f"{base} {result.base_state}; docker {result.docker}, compose {result.compose}")
    return result


@contextmanager
def locked(run: Run, target: Target, release: str | None, wait: float) -> Iterator[lock.LockHolder]:
    """Hold the deploy lock for the block; on the way out release it only while it is ours."""
    holder = lock.LockHolder.here(release, run.command)
    with run.step("lock") as step:
        lock.acquire(target, holder, wait=wait)
        step.note(f"taken by {holder.who}" + (f" for release {release}" if release else ""))
    try:
        yield holder
    finally:
        if lock.release_if_ours(target, holder):
            run.log("deploy lock released")
        else:
            run.warn("the deploy lock was no longer ours (force-released?); left it to its current holder "
                     f"({lock.status(target)})")


def push(run: Run, target: Target, local: sync.LocalRelease, env_content: str) -> sync.PushResult:
    """The env file (0600) and the release's files (only what changed since ``current``)."""
    with run.step("push") as step:
        env_path = sync.write_env(target, env_content)
        result = sync.push(target, local)
        summary = {"release_id": result.release_id, "previous_release": result.previous_release,
                   "bytes_sent": result.bytes_sent, "files_total": result.files_total,
                   "changed_count": len(result.changed), "removed_count": len(result.removed),
                   "changed_services": result.changed_services}
        run.record("push", summary)
        run.artifacts.write_json("push.json", {**run.details["push"], "changed": result.changed,
                                               "removed": result.removed, "env_file": env_path})
        step.note(f"release {result.release_id}: {len(result.changed)} changed, {len(result.removed)} removed,"
                  f" {result.bytes_sent} bytes sent")
    return result


def switch(run: Run, target: Target, release_id: str) -> str:
    with run.step("switch") as step:
        sync.switch(target, release_id)
        step.note(f"current -> {release_id}")
    return release_id


def up(run: Run, target: Target, spec: compose.ComposeSpec, release_id: str, build: set[str] | None,
       recreate: set[str] = frozenset()) -> compose.UpResult:
    """Build (all when ``build`` is None) and start the current release; wait until healthy.
    The release's outcome is recorded either way; a failure leaves diagnostics in the run."""
    with run.step("up") as step:
        try:
            result = compose.up(target, spec, services_to_build=build, services_to_recreate=recreate)
        except compose.ComposeError as exc:
            for name, text in (exc.diagnostics or {}).items():
                run.artifacts.write_text(f"{target.artifact_prefix}diagnostics/{name}", text)
            sync.record_outcome(target, release_id, "failed")
            raise
        run.record("up", {"rebuilt": result.rebuilt, "recreated": result.recreated, "built": result.built,
                          "services": {n: s.status for n, s in result.services.items()}})
        step.note(f"built {sorted(result.rebuilt) if result.rebuilt else 'nothing'};"
                  f" recreated {sorted(result.recreated) if result.recreated else 'nothing'}")
    sync.record_outcome(target, release_id, "success")
    return result


def prune(run: Run, target: Target, keep: int) -> list[str]:
    removed = sync.prune(target, keep)
    if removed:
        run.log(f"pruned old releases: {', '.join(removed)}")
    return removed


def run_checks(run: Run, run_checks_edge, target: checks.CheckTarget, config: checks.ChecksConfig) -> checks.ChecksReport:
    """The outside-in checks; their files land in http/, their results in run.json."""
    with run.step("checks") as step:
        report = run_checks_edge(target, config)
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


def collect(run: Run, target: Target, spec: remote_collect.CollectSpec) -> remote_collect.CollectResult:
    with run.step("collect") as step:
        result = remote_collect.collect(target, spec, run.artifacts.write_text)
        run.record("services", result.services)
        run.record("current_release", result.current_release)
        if result.failed:
            step.warn(f"{len(result.failed)} item(s) could not be collected: " + ", ".join(sorted(result.failed)))
        else:
            step.note(f"{len(result.written)} files")
    return result


def list_releases(run: Run, target: Target) -> list[sync.ReleaseInfo]:
    with run.step("releases") as step:
        found = sync.list_releases(target)
        step.note(f"{len(found)} releases")
    return found
