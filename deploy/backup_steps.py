"""The backup steps over SSH, shared by the backup tasks and verify: read the repository's
status, take a backup, and turn the status into verify's checks."""
from __future__ import annotations

import time
from typing import Any, Callable

from deploy import backups
from deploy.backups import BackupError, BackupSet, BackupStatus, DatabaseNotRunning
from deploy.checks.model import CheckResult
from deploy.report.run import Run
from deploy.runtime import Runtime
from remote import backup as backup_cmd
from remote.host import Host

# pgBackRest's own words, redacted like every artifact.
LOG_DIR = "backups"


BUSY_RETRY_SECONDS = 5.0          # while another backup holds pgBackRest's lock
BUSY_WAIT_LIMIT = 6 * 3600.0


def read_status(run: Run, leader: Host, runtime: Runtime, stopped: bool = False) -> BackupStatus:
    """The repository's state from the running PostgreSQL container; ``stopped``: from a
    one-off container of the service instead (the server is down: a restore to finish)."""
    if stopped:
        res = leader.run(runtime.database_one_off(leader, "backup-status"), "reading the backup repository",
                         check=False, timeout=300)
    else:
        res = leader.run(backup_cmd.status(runtime.database()), "reading the backup status", check=False, timeout=120)
    if res.exited == backup_cmd.NO_CONTAINER:
        raise DatabaseNotRunning(f"PostgreSQL is not running on {leader.name}",
                          "`inv up` starts the live release again; `inv status` shows what runs")
    run.artifacts.write_text(f"{LOG_DIR}/status.json", res.stdout)
    status = backups.parse_status(res.stdout)
    run.record("backups", status.record())
    return status


def take(run: Run, leader: Host, runtime: Runtime, kind: str, why: str) -> BackupSet:
    """A backup now; the newest backup in the repository afterwards is it."""
    return take_reading(run, leader, runtime, kind, why)[0]


def take_reading(run: Run, leader: Host, runtime: Runtime, kind: str, why: str) -> tuple[BackupSet, BackupStatus]:
    """A backup now, and the repository's status read right after it (with the write counters
    a later rollback compares against)."""
    with run.step("backup") as step:
        started = time.monotonic()
        waited = False
        while True:
            res = leader.run(backup_cmd.backup(runtime.database(), kind), f"{kind} backup ({why})", check=False,
                             timeout=6 * 3600)
            if res.ok or "unable to acquire lock" not in res.output or time.monotonic() - started > BUSY_WAIT_LIMIT:
                break
            if not waited:   # the schedule's backup (e.g. a new stack's first full): this one follows it
                run.log("another backup is running (the schedule's); waiting for it to end")
                waited = True
            time.sleep(BUSY_RETRY_SECONDS)
        run.artifacts.write_text(f"{LOG_DIR}/backup-{kind}.log", res.output)
        if not res.ok:
            raise BackupError(f"the {kind} backup failed: {res.tail(lines=3)}", backups.repository_fix(res.output))
        status = read_status(run, leader, runtime)
        if not status.backups:
            raise BackupError("pgBackRest reported a backup but the repository lists none",
                              f"pgBackRest's output is in {LOG_DIR}/ in the run folder")
        made = status.backups[-1]
        step.note(f"{made.kind} {made.label}, {size(made.size)} ({size(made.stored)} stored) in "
                  f"{time.monotonic() - started:.1f} s")
    run.record("backup", {**made.record(), "why": why, "seconds": round(time.monotonic() - started, 1)})
    return made, status


def before_migrating(run: Run, leader: Host, runtime: Runtime, live: str | None,
                     skip: bool) -> Callable[[list[str]], dict[str, Any]]:
    """What a deploy calls once it knows the migrations it is about to apply: the backup that
    undoes them (an incremental one: the WAL since it replays to any later moment), as the
    release's record keeps it: its label and the rows written per table when it was taken
    (`inv rollback --restore` counts what a restore would lose from them). ``skip``
    (--skip-backup): none, said in the log, run.json and the summary. A failed backup stops the
    deploy before anything is migrated."""
    def backup(pending: list[str]) -> dict[str, Any]:
        if skip:
            run.warn(f"migrating {', '.join(pending)} without a backup first (--skip-backup)")
            run.record("backup_before_migrate", {"skipped": True, "migrations": pending})
            return {"backup": None}
        try:
            made, status = take_reading(run, leader, runtime, "incr", f"before migrating {', '.join(pending)}")
        except BackupError as exc:
            raise BackupError(f"the backup before migrating failed, so nothing was migrated"
                              + (f" and release {live} still serves" if live else "") + f": {exc.message}",
                              f"{exc.hint}; or deploy with --skip-backup to migrate without one "
                              "(written in run.json)") from None
        run.record("backup_before_migrate", {"skipped": False, "label": made.label, "migrations": pending})
        return {"backup": made.label, "backup_end": made.stopped.isoformat(), "writes_at_backup": status.writes}
    return backup


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"




def check(run: Run, leader: Host, runtime: Runtime) -> list[str]:
    """verify's backup checks, recorded with the others; the names of those that fail. With no
    PostgreSQL running there is nothing to read: the step says so and fails no check of its own
    (the services' state names the database), so it can run beside collect."""
    with run.step("backup-checks") as step:
        try:
            status = read_status(run, leader, runtime)
            results = backups.checks(status)
        except DatabaseNotRunning as exc:
            step.step.status = "skipped"
            step.note(f"{exc.message}: nothing to read (the services' state says why)")
            return []
        except BackupError as exc:
            results = [CheckResult("backups: repository", "fail", "unknown", "readable", f"{exc.message}; {exc.hint}")]
        run.add_checks([r.to_dict() for r in results])
        for r in results:
            if r.status in ("warn", "fail"):
                run.warn(f"{r.name}: {r.message}")
        failed = [r.name for r in results if r.status == "fail"]
        if failed:
            step.step.status = "failed"
        step.note(", ".join(f"{r.name.removeprefix('backups: ')} {r.status}" for r in results))
    return failed
