"""The database's backups: take one now, list them, restore one (in place, under the deploy
lock). A restore names what it replaces and asks for the droplet's name; before it changes
anything it takes a backup of the current state, so a restore made by mistake can be undone.

    backup      find -> connect node 1 -> lock -> backup -> its label, type, size, duration
    backups     find -> connect node 1 -> the repository's backups and recoverable window
    restore     find -> connect node 1 -> lock -> check the target -> confirm -> backup now ->
                stop the writers -> archive the last WAL -> stop postgres -> restore ->
                start the live release -> verify
    deploy --restore (disaster recovery): confirm -> `inv deploy` of the current release on a new
                droplet whose database is filled from the repository after the build and before
                anything starts (Recovery, called by deploy.flows.release.ship) -> verify
"""
from __future__ import annotations

import dataclasses

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.errors import OperatorError
from deploy import backup_config, backups, confirm, releases, steps
from deploy.backup_steps import LOG_DIR, read_status, size, take
from deploy.backups import BackupError, BackupStatus, RestoreInputError
from deploy.flows import reach, release
from deploy.flows.inspect import verify
from deploy.report.run import Run
from deploy.runtime import ComposeRuntime, Runtime, for_cluster
from deploy.settings import Settings
from deploy.wiring import REAL_EDGES, Edges
from remote import backup as backup_cmd
from remote import commands as cmd
from remote import sync
from remote.host import Host

WRITERS = ("api", "django", "worker", "beat", "flower")
RESTORE_MARKER = "restore-pending.json"


@dataclass(frozen=True)
class RestoreTarget:
    """What an operator asked for: the newest point, one backup, or a moment."""

    latest: bool = False
    label: str | None = None
    time: str | None = None

    def flag(self) -> str:
        """The same target as `inv restore`'s options."""
        if self.label:
            return f"--backup {self.label}"
        if self.time:
            return f"--to '{self.time}'"
        return "--latest"

    def describe(self) -> str:
        if self.label:
            return f"the end of backup {self.label}"
        if self.time:
            return self.time
        return "the newest archived transaction"

    @classmethod
    def of(cls, latest: bool, label: str | None, to: str | None) -> "RestoreTarget":
        chosen = [bool(latest), bool(label), bool(to)]
        if sum(chosen) != 1:
            raise RestoreInputError("say what to restore: exactly one of --latest, --backup LABEL or --to TIMESTAMP",
                                    "e.g. `inv restore --latest`, `inv restore --backup 20261206-030000F` or "
                                    "`inv restore --to '2026-12-06 03:00:00+00'`")
        return cls(latest=bool(latest), label=label or None, time=to or None)


@dataclass(frozen=True)
class Recovery:
    """A disaster recovery's part of a deploy: the new droplet's empty database filled from the
    repository in Spaces before the release goes live, so the app never serves a request on an
    empty database."""

    target: RestoreTarget

    @staticmethod
    def require(settings: Settings) -> None:
        if not backup_config.off_droplet(settings.stack_env):
            raise RestoreInputError("--restore needs the backups that were off the droplet, and SPACES_BUCKET is not set "
                                    "(backups on the lost droplet went with it)",
                                    "set SPACES_BUCKET, SPACES_REGION, SPACES_KEY, SPACES_SECRET and BACKUP_CIPHER_PASS "
                                    "as they were when the backups were taken")

    def check(self, leader: Host) -> None:
        """Only an empty stack is filled: a droplet with a live release has a database in use."""
        current = releases.live(sync.list_releases(leader))
        if current is not None:
            raise RestoreInputError(f"{leader.name} already runs release {current} with its own database; "
                                    "--restore only fills a new droplet's empty one, and nothing was changed",
                                    f"restore in place with `inv restore {self.target.flag()}` (it backs up the "
                                    "current state first), or remove the stack with `inv destroy` first")

    def apply(self, run: Run, leader: Host, runtime: Runtime, release_id: str) -> None:
        if not isinstance(runtime, ComposeRuntime):   # recover() restores onto one droplet, then scales out
            raise OperatorError("a disaster recovery fills one droplet's database, then grows the swarm; nothing is live",
                                "run `inv deploy --restore ...` again: it deploys node 1 first")
        self.check(leader)
        with run.step("restore") as step:
            res = leader.run(runtime.database_one_off(leader, "backup-status", release_id=release_id),
                             "reading the backup repository", check=False, timeout=300)
            run.artifacts.write_text(f"{LOG_DIR}/status.json", res.stdout)
            status = backups.parse_status(res.stdout)
            args = checked(status, self.target)
            run.record("restore", {"target": self.target.describe(), "repository": status.repo,
                                   "backups": [b.label for b in status.backups]})
            res = leader.run(runtime.database_one_off(leader, "pgbr", args, release_id=release_id),
                             f"restoring to {self.target.describe()}", check=False, timeout=6 * 3600)
            run.artifacts.write_text(f"{LOG_DIR}/restore.log", res.output)
            if not res.ok:
                raise BackupError(f"the restore failed before it finished: {res.tail(lines=3)}; nothing is live",
                                  "run the same `inv deploy --restore` again (it resumes where it stopped); "
                                  "pgBackRest's output is in backups/restore.log")
            step.note(f"database restored to {self.target.describe()}; it replays the WAL when it starts")


def recover(run: Run, settings: Settings, target: RestoreTarget, yes: bool = False, edges: Edges = REAL_EDGES,
            ask=input) -> None:
    """`inv deploy --restore`: a new droplet, the current release, the database from Spaces."""
    settings.require("DOMAIN")
    Recovery.require(settings)
    name = settings.droplet_name
    confirm.typed_name(name, f"deploy {name} and fill its database from the backups, to {target.describe()}", yes, ask=ask)
    nodes = settings.nodes or 1
    if nodes == 1:
        release.deploy(run, settings, edges=edges, fill=Recovery(target))
        return
    # A swarm: node 1 (the data node) is deployed and filled first, as one droplet, before any
    # service starts; growing to NODES then moves that stack onto the swarm with its volume,
    # as `inv deploy --nodes N` does for any droplet (docs/scaling-out.md).
    run.log(f"disaster recovery onto {nodes} nodes: node 1 with its database first, then the swarm")
    release.deploy(run, dataclasses.replace(settings, nodes=1), edges=edges, fill=Recovery(target))
    release.deploy(run, settings, edges=edges)


@contextmanager
def _on_database(run: Run, settings: Settings, edges: Edges) -> Iterator[tuple[Host, Runtime, str]]:
    """Node 1 (it holds the data), connected; the runtime; the droplet's name."""
    cluster = reach.find(run, settings, edges, exact=False)
    runtime = for_cluster(cluster, settings, edges)
    with reach.connected(run, settings, edges, cluster.nodes[:1]) as inventory:
        yield inventory.targets[0], runtime, cluster.leader.name


def backup_now(run: Run, settings: Settings, edges: Edges = REAL_EDGES, full: bool = False) -> None:
    """An on-demand backup: full when asked or when none exists, else a differential."""
    with _on_database(run, settings, edges) as (leader, runtime, _name):
        with steps.locked(run, leader, "(backup)", settings.lock_wait):
            status = read_status(run, leader, runtime)
            if status.problem:
                raise BackupError(f"the backup repository cannot be used: {status.problem}",
                                  backups.repository_fix(status.problem))
            kind = "full" if full or not any(b.kind == "full" for b in status.backups) else "diff"
            made = take(run, leader, runtime, kind, "inv backup")
    run.console.print(f"backup {made.label}: {made.kind}, {size(made.size)} ({size(made.stored)} stored), "
                      f"{(made.stopped - made.started).total_seconds():.0f} s", markup=False)


def list_backups(run: Run, settings: Settings, edges: Edges = REAL_EDGES, as_json: bool = False) -> BackupStatus:
    with _on_database(run, settings, edges) as (leader, runtime, _name):
        status = read_status(run, leader, runtime)
    if as_json:
        run.console.print(json.dumps(status.record(), indent=2), markup=False, soft_wrap=True)
        return status
    where = "Spaces bucket" if status.off_droplet else "the droplet itself (not safe from its loss)"
    lines = [f"repository: {where}"]
    if status.problem:
        lines.append(f"cannot be read: {status.problem} ({backups.repository_fix(status.problem)})")
    for b in status.backups:
        lines.append(f"{b.label}  {b.kind:<4}  {b.started:%Y-%m-%d %H:%M:%S} -> {b.stopped:%H:%M:%S}Z  "
                     f"{size(b.size):>10}  {size(b.stored):>10} stored  WAL {b.wal_start}..{b.wal_stop}")
    if status.earliest:
        lines.append(f"recoverable: {status.earliest.isoformat()} to {status.latest.isoformat() if status.latest else '?'}")
    elif not status.problem:
        lines.append("no backup yet: `inv backup` takes one")
    run.artifacts.write_text("backups.txt", "\n".join(lines) + "\n")
    for line in lines:
        run.console.print(line, markup=False)
    return status


def restore(run: Run, settings: Settings, target: RestoreTarget, yes: bool = False, edges: Edges = REAL_EDGES,
            ask=input) -> None:
    with _on_database(run, settings, edges) as (leader, runtime, name):
        with steps.locked(run, leader, "(restore)", settings.lock_wait):
            earlier = unfinished(run, leader)
            current = _live_release(leader)
            # An unfinished restore left the server stopped: the repository is read from a one-off container.
            status = read_status(run, leader, runtime, stopped=earlier is not None)
            args = checked(status, target)
            confirm.typed_name(name, f"replace the database on {name} with {target.describe()}", yes, ask=ask)
            if earlier is None:
                undo = take(run, leader, runtime, "full" if not status.backups else "diff", "before the restore").label
                if not target.label and not target.time:
                    args = backup_cmd.restore_args(base=undo)   # on the live timeline, and the least WAL to replay
                stop_writers(run, leader, runtime)
            else:   # the database is half restored: the backup taken before the first attempt undoes it
                undo = str(earlier.get("undo") or "?")
            run.log(f"the database as it was is backup {undo}: `inv restore --backup {undo}` undoes this restore")
            restore_in_place(run, leader, runtime, current, args, target, undo)
        verify(run, settings, edges, *_cluster_again(run, settings, edges))


def unfinished(run: Run, leader: Host) -> dict | None:
    """An earlier restore that stopped halfway (its marker is still there), named with the
    backup that holds the database as it was before it; None when there is none."""
    res = leader.run(f"cat {cmd.q(leader.layout.base + '/' + RESTORE_MARKER)}", "looking for an unfinished restore",
                     check=False, timeout=30)
    if not res.ok:
        return None
    try:
        earlier = json.loads(res.stdout)
    except json.JSONDecodeError:
        earlier = {}
    run.warn(f"an earlier restore to {earlier.get('target', '?')} did not finish; this one replaces it. The database "
             f"as it was before that one is backup {earlier.get('undo', '?')}")
    return earlier


def checked(status: BackupStatus, target: RestoreTarget) -> list[str]:
    """pgBackRest's restore options for the target, refused before anything changes when no
    backup and WAL can reach it."""
    if status.problem:
        raise BackupError(f"the backup repository cannot be used: {status.problem}", backups.repository_fix(status.problem))
    if not status.backups:
        raise RestoreInputError("there is no backup to restore from", "`inv backup` takes the first one")
    if target.label:
        status.find(target.label)
        return backup_cmd.restore_args(label=target.label)
    if target.time:
        moment = backups.parse_target(target.time)
        backups.check_target(status, moment)
        base = status.restore_base(before=moment)
        if base is None:
            raise RestoreInputError(f"no backup on the live database's history ended before {moment.isoformat()}",
                                    "pick a later time (`inv backups` lists the backups and the window)")
        return backup_cmd.restore_args(target_time=backups.pg_time(moment), base=base.label)
    base = status.restore_base()
    return backup_cmd.restore_args(base=base.label if base else None)


def _live_release(leader: Host) -> str:
    found = sync.list_releases(leader)
    current = releases.live(found)
    if current is None:
        raise OperatorError("no live release on the droplet", "deploy first (`inv deploy`)")
    return current


def stop_writers(run: Run, leader: Host, runtime: Runtime) -> None:
    with run.step("stop-writers") as step:
        leader.run(runtime.stop_command(leader, WRITERS), "stopping the services that write", timeout=300)
        # Every transaction committed so far reaches the repository before the server stops.
        res = leader.run(backup_cmd.archive_now(runtime.database()), "archiving the last WAL", check=False, timeout=300)
        if not res.ok:
            raise BackupError(f"the last WAL could not be archived: {res.tail(lines=3)}",
                              "the database is unchanged and the writers are stopped: `inv up` starts them again; "
                              + backups.repository_fix(res.output))
        step.note(", ".join(WRITERS) + " stopped; WAL archived")


def restore_in_place(run: Run, leader: Host, runtime: Runtime, current: str,
                     args: list[str], target: RestoreTarget, undo: str,
                     start: Callable[[], None] | None = None) -> None:
    """The restore itself, PostgreSQL stopped, then the stack started on it: ``current`` again,
    or what ``start`` puts live (a rollback's release)."""
    marker = f"{leader.layout.base}/{RESTORE_MARKER}"
    leader.put(marker, json.dumps({"target": target.describe(), "undo": undo, "release": current}).encode(), mode=0o600)
    with run.step("restore") as step:
        leader.run(runtime.stop_command(leader, [backup_cmd.SERVICE]), "stopping PostgreSQL", timeout=300)
        res = leader.run(runtime.database_one_off(leader, "pgbr", args), f"restoring to {target.describe()}",
                         check=False, timeout=6 * 3600)
        run.artifacts.write_text(f"{LOG_DIR}/restore.log", res.output)
        if not res.ok:
            raise BackupError(f"the restore failed before it finished: {res.tail(lines=3)}; the stack stays stopped, "
                              "so nothing runs on a half-restored database",
                              f"run the same `inv restore` again (it resumes), or `inv restore --backup {undo}` "
                              "to return to the database as it was; pgBackRest's output is in backups/restore.log")
        step.note(f"restored to {target.describe()}")
    if start is None:
        meta = sync.read_release_meta(leader, current) or {}
        runtime.restart(run, leader, current, meta.get("images") or {})
    else:
        start()
    leader.run(f"rm -f {cmd.q(marker)}", "clearing the restore marker", timeout=30)


def _cluster_again(run: Run, settings: Settings, edges: Edges):
    cluster = reach.find(run, settings, edges, exact=False)
    return cluster, for_cluster(cluster, settings, edges)
