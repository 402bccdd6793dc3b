"""`inv deploy --plan`: what a deploy would do, changing nothing (pyinfra's --dry, Ansible's check
mode).

The cloud half is deploy.cloud.plan_provision (GET requests only). The droplet half is read without
writing anything: who holds the lock, the live release's metadata (its manifest and image map), which
of its images are present, the hash of its env file and its compose files. What follows from those is
computed with the functions a deploy uses (sync.diff_manifests, sync.services_for_changes,
sync.services_for_mounts, images.plan), so a plan and the deploy after it agree.

What a plan cannot know without running code on the droplet it says so: whether the database already
has a migration, whether a full deploy's rebuilt image comes out identical, which services use an
env variable that changed.
"""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deploy import cloud
from remote import commands as cmd
from remote import edge_config, images, lock, swarm, sync
from remote.compose import ComposeSpec
from remote.host import Host

if TYPE_CHECKING:
    from deploy.report.run import Run

# A Django (or Alembic-style) migration module: <app>/migrations/<name>.py, not the package marker.
MIGRATION = re.compile(r"(^|/)migrations/(?!__init__\.py$)[^/]+\.py$")
SHOWN_PATHS = 8          # paths listed on the console per kind; plan.json lists every one


@dataclass(frozen=True)
class LiveState:
    """What the droplet says about its live release. The defaults: a droplet without one (or none
    yet at all)."""

    release: str | None = None
    meta: dict = field(default_factory=dict)
    lock: str | None = None                                  # the holder, described; None: free
    images: dict[str, str] = field(default_factory=dict)    # ref -> image id, or images.MISSING
    env_sha256: str | None = None
    compose: dict[str, dict] = field(default_factory=dict)  # changed compose file -> its live content


@dataclass(frozen=True)
class ReleasePlan:
    host: str
    live_release: str | None
    lock: str | None
    files_total: int
    changed: list[str]
    removed: list[str]
    env_file: str                       # new | changed | unchanged
    build: dict[str, str]               # service -> why its image is built
    recreate: dict[str, str]            # service -> why its container is (re)created
    remove: list[str]                   # services gone from the compose files: their containers go
    migrations: dict[str, list[str]]    # added | changed | removed -> migration files
    notes: list[str]


@dataclass(frozen=True)
class DeployPlan:
    mode: str                                   # full | update
    provision: cloud.ProvisionPlan | None       # None with --update-only (the droplet is only found)
    releases: list[ReleasePlan]
    cluster: cloud.ClusterPlan | None = None    # NODES > 1: the swarm's droplets


# -- reading the droplet ----------------------------------------------------------------------------

def read_live(target: Host, local: sync.LocalRelease, compose_files: Iterable[str]) -> LiveState:
    """Everything the plan needs from the droplet, by commands that only read."""
    holder = lock.status(target)
    release = sync.current_release(target)
    if not release:
        return LiveState(lock=holder.describe() if holder else None)
    meta = sync.read_release_meta(target, release) or {}
    refs = [e.get("ref") for e in (meta.get("images") or {}).values()]
    layout = target.layout
    env_hash = target.run(cmd.sha256_of(layout.env_file(release)), check=False).stdout.split()[:1]
    changed, _ = sync.diff_manifests(meta.get("manifest") or {}, local.manifest)
    live_compose = {name: sync.load_yaml(target.run(cmd.read_file(f"{layout.release(release)}/{name}"),
                                                     check=False).stdout) or {}
                    for name in compose_files if name in changed}
    return LiveState(release=release, meta=meta, lock=holder.describe() if holder else None,
                     images=images.lookup(target, refs), env_sha256=env_hash[0] if env_hash else None,
                     compose=live_compose)


# -- what follows (pure) ----------------------------------------------------------------------------

def _services(definitions: Iterable[Mapping[str, Any]]) -> dict[str, dict]:
    """The services of several compose files, later files overriding earlier ones key by key."""
    merged: dict[str, dict] = {}
    for data in definitions:
        for name, svc in ((data or {}).get("services") or {}).items():
            merged[name] = {**merged.get(name, {}), **(svc or {})}
    return merged


def _definition_changes(before: Mapping[str, dict], after: Mapping[str, dict]) -> dict[str, str]:
    out = {}
    for name, svc in after.items():
        old = before.get(name)
        if old is None:
            out[name] = "new service"
        elif old != svc:
            if old.get("image") != svc.get("image") and svc.get("build") is None:
                out[name] = f"image {old.get('image')} -> {svc.get('image')}"
            else:
                keys = sorted(k for k in {*old, *svc} if old.get(k) != svc.get(k))
                out[name] = f"compose definition changed ({', '.join(keys)})"
    return out


def release_plan(host: str, local: sync.LocalRelease, live: LiveState, spec: ComposeSpec, env_content: str,
                 update_only: bool) -> ReleasePlan:
    """What shipping ``local`` onto a droplet in state ``live`` would do; mirrors deploy.flows.release.ship."""
    old_manifest = live.meta.get("manifest") or {}
    changed, removed = sync.diff_manifests(old_manifest, local.manifest)
    touched = changed + removed
    inputs = sync.services_for_changes(local.compose, touched, local.compose_dir) if local.compose else set()
    previous = {n: e["ref"] for n, e in (live.meta.get("images") or {}).items() if e.get("ref")}
    image_plan = images.plan(local.compose, spec.project, "(new)", previous, inputs if update_only else None,
                             live.images)
    build = {n: (f"{why}; build inputs changed" if why == "full deploy" and n in inputs and live.release else why)
             for n, why in sorted(image_plan.reasons.items())}
    notes: list[str] = []
    local_files = {name: sync.read_compose(local.root / name) for name in spec.compose_files}
    wanted = _services(local_files.values())
    recreate: dict[str, str] = {}
    remove: list[str] = []
    if live.release is None:
        recreate = {n: "first release on this droplet" for n in wanted}
    else:
        for name, why in build.items():
            old = previous.get(name)
            if update_only or name in inputs or not old or live.images.get(old, images.MISSING) == images.MISSING:
                recreate[name] = f"new image: {why}"
        unsure = sorted(set(build) - set(recreate))
        if unsure:
            notes.append(f"a full deploy rebuilds every image: {', '.join(unsure)} keep running unless the "
                         "rebuilt image differs (their build inputs did not change)")
        for path in touched:
            for name in sorted(sync.services_for_mounts(local.compose, [path], local.compose_dir)):
                recreate.setdefault(name, f"bind-mounted {path} changed")
        if edge_config.ROUTES_FILE in touched:
            notes.append(f"{edge_config.ROUTES_FILE} changed: Traefik reloads its routes when the release goes "
                         "live, without a restart (remote/edge_config.py)")
        before = _services(live.compose.get(n, local_files[n]) for n in spec.compose_files)
        for name, why in _definition_changes(before, wanted).items():
            recreate.setdefault(name, why)
        remove = sorted(set(before) - set(wanted))
    env_sha = hashlib.sha256(env_content.encode("utf-8")).hexdigest()
    env_state = "new" if live.release is None else ("unchanged" if live.env_sha256 == env_sha else "changed")
    if env_state == "changed":
        notes.append("the env file differs from the live release's: compose recreates the services whose "
                     "variables changed (which ones is not known without reading the live secrets)")
    migrations = {"added": [p for p in changed if MIGRATION.search(p) and p not in old_manifest],
                  "changed": [p for p in changed if MIGRATION.search(p) and p in old_manifest],
                  "removed": [p for p in removed if MIGRATION.search(p)]}
    if any(migrations.values()):
        notes.append("migration files are compared with the live release's files only: whether the database "
                     "has applied them is not checked (that would run code on the droplet)")
    return ReleasePlan(host=host, live_release=live.release, lock=live.lock, files_total=len(local.manifest),
                       changed=changed, removed=removed, env_file=env_state, build=build,
                       recreate=dict(sorted(recreate.items())), remove=remove, migrations=migrations,
                       notes=notes)


# -- showing it -------------------------------------------------------------------------------------

def _paths(paths: list[str]) -> str:
    shown = ", ".join(paths[:SHOWN_PATHS])
    return shown + (f" ... and {len(paths) - SHOWN_PATHS} more (plan.json lists all)" if len(paths) > SHOWN_PATHS else "")


def _reasons(services: Mapping[str, str]) -> str:
    """``api, worker (why); traefik (why)``: services that share a reason are named together."""
    grouped: dict[str, list[str]] = {}
    for name, why in services.items():
        grouped.setdefault(why, []).append(name)
    return "; ".join(f"{', '.join(names)} ({why})" for why, names in grouped.items())


def _provision_rows(p: cloud.ProvisionPlan) -> list[tuple[str, str]]:
    if p.droplet is None:
        droplet = f"create {p.name}: {p.size} in {p.region}, image {p.image}"
    else:
        d = p.droplet
        droplet = f"found {d.name} (id {d.id}): {d.size or '?'} in {d.region}, {d.public_ipv4 or 'no public IPv4'}, {d.status}"
    rows = [("droplet", droplet)]
    if p.ssh_identity == "register":
        rows.append(("ssh key", "register this machine's public key (SSH_KEY_PATH) with the account"))
    fw = p.firewall
    firewall = {"create": f"create {p.name}: SSH only from {', '.join(fw.ssh_from)}; 80/443 from anywhere",
                "update": f"update: SSH from {', '.join(fw.ssh_from_now) or 'nobody'} -> {', '.join(fw.ssh_from)}",
                "attach": f"attach the existing firewall {p.name} to the droplet",
                "unchanged": f"unchanged (SSH only from {', '.join(fw.ssh_from)})",
                "skipped": "not touched (--skip-allowlist)"}[fw.action]
    rows.append(("firewall", firewall))
    if p.dns.records_changed:
        dns = "; ".join(f"{c['action']} A {c['name']}" + (f" {c['from']}" if c["from"] else "")
                        + f" -> {c['to'] or 'the new droplet IP'}" for c in p.dns.records_changed)
    else:
        dns = {"managed": "unchanged: every A record points at the droplet"}.get(p.dns.status, p.dns.warning or p.dns.status)
    rows.append(("dns", dns))
    return rows


def _cluster_rows(c: cloud.ClusterPlan, update_only: bool) -> list[tuple[str, str]]:
    found = [f"{name} ({d.public_ipv4 or 'no public IPv4'})" for name, d in c.nodes if d is not None]
    create = [name for name, d in c.nodes if d is None]
    rows = [("nodes", "; ".join(part for part in (
        f"found {', '.join(found)}" if found else "", f"create {', '.join(create)} (tagged {c.tag})" if create else "")
        if part))]
    if update_only and (create or c.surplus):
        rows.append(("node count", f"{len(found) + len(c.surplus)} exist, NODES is {len(c.nodes)}: --update-only "
                                   "would stop (exit 2); a full `inv deploy` changes the count"))
    elif c.surplus:
        rows.append(("remove", f"{', '.join(d.name for d in c.surplus)}: tasks moved start-first to the other "
                               "nodes, out of the swarm, droplet deleted"))
    managers = swarm.manager_count(len(c.nodes))
    rows.append(("swarm", f"{managers} manager(s): {', '.join(name for name, _ in c.nodes[:managers])}; "
                          "images pushed to the registry once, rolled out by Swarm start-first"))
    return rows


def _release_rows(r: ReleasePlan) -> list[tuple[str, str]]:
    rows = [("lock", f"held by {r.lock}: a deploy now would wait LOCK_WAIT seconds, then stop (exit 5)"
             if r.lock else "free (the plan did not take it)")]
    rows.append(("release", f"live: {r.live_release}" if r.live_release else "none live yet: this is the first release"))
    files = f"{len(r.changed)} changed, {len(r.removed)} removed of {r.files_total}"
    if r.live_release is None:
        files = f"all {r.files_total} files are sent"
    elif r.changed or r.removed:
        files += ": " + "; ".join(part for part in (
            f"changed {_paths(r.changed)}" if r.changed else "", f"removed {_paths(r.removed)}" if r.removed else "") if part)
    rows.append(("files", files))
    rows.append(("env file", r.env_file))
    rows.append(("build", _reasons(r.build) or "nothing: every image the release needs is on the droplet"))
    rows.append(("recreate", _reasons(r.recreate) or "nothing: every container keeps running"))
    if r.remove:
        rows.append(("remove", f"{', '.join(r.remove)} (no longer in the compose files)"))
    mig = [f"{kind} {_paths(paths)}" for kind, paths in r.migrations.items() if paths]
    rows.append(("migrations", "; ".join(mig) or "no migration file changed"))
    rows += [("note", note) for note in r.notes]
    return rows


def table(plan: DeployPlan) -> Table:
    title = "deploy plan" + (" (--update-only)" if plan.mode == "update" else "") + ": nothing was changed"
    out = Table(title=title, show_header=False, show_lines=False)
    out.add_column("what", style="bold")
    out.add_column("would happen", overflow="fold")
    sections = [_provision_rows(plan.provision)] if plan.provision else []
    if plan.cluster is not None:
        sections.append(_cluster_rows(plan.cluster, plan.mode == "update"))
    for release in plan.releases:
        rows = _release_rows(release)
        sections.append([(f"{release.host} {what}", text) for what, text in rows] if len(plan.releases) > 1 else rows)
    if plan.provision and plan.provision.warnings:
        sections.append([("warning", w) for w in plan.provision.warnings])
    for rows in sections:
        for what, text in rows:
            out.add_row(escape(what), escape(text))
        out.add_section()
    return out


def publish(run: "Run", plan: DeployPlan) -> None:
    """plan.json and plan.txt in the run folder (through the redactor), the table on the console."""
    run.record("plan", plan)
    run.artifacts.write_json("plan.json", run.details["plan"])
    shown = table(plan)
    plain = Console(file=io.StringIO(), width=110, color_system=None)
    plain.print(shown)
    run.artifacts.write_text("plan.txt", plain.file.getvalue())
    run.artifacts.append_text("run.log", plain.file.getvalue())
    run.console.print(shown)
