"""pgBackRest in the fake droplet's postgres container: a repository of backups that answers
the commands remote/backup.py builds (backup-status, pgbr backup/check, the restore in a
one-off container) with the shapes the real image prints (stack/postgres/backup-status.sh,
whose real output tests/stack/test_backups.py checks)."""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field

from remote.host import Result


@dataclass
class FakeDatabase:
    repo: str = "posix"
    backups: list[dict] = field(default_factory=list)
    problem: str = ""                 # what pgBackRest says when the repository cannot be used
    archive_fails: bool = False       # archive-push fails (an unreachable repository)
    restore_fails: str = ""           # the restore's error (e.g. a full disk)
    restores: list[list[str]] = field(default_factory=list)
    checks: int = 0
    busy: int = 0                     # backups refused for pgBackRest's lock (the schedule's runs) before one gets it
    clock: float = field(default_factory=time.time)
    # pg_stat_user_tables' counters, table -> [inserted, updated, deleted]: what the app wrote
    writes: dict[str, list[int]] = field(default_factory=lambda: {"public.notes_note": [3, 0, 0]})

    def now(self) -> float:
        return max(self.clock, time.time())

    def full(self, label: str = "20261206-030000F", stop: float | None = None) -> "FakeDatabase":
        stop = stop if stop is not None else self.now() - 3600
        self.backups.append({"label": label, "type": "full", "timestamp": {"start": stop - 5, "stop": stop},
                             "info": {"size": 31457280, "repository": {"size": 300000, "delta": 300000}},
                             "archive": {"start": "000000010000000000000002", "stop": "000000010000000000000002"}})
        return self

    def status(self, server: bool = True) -> str:
        """backup-status.sh's document; ``server`` False: run where PostgreSQL is not running (a
        one-off container), so the archiver and the schedule are null."""
        code = 0 if self.backups else 2
        info: list[dict] = [{"name": "main", "status": {"code": code, "message": "ok" if code == 0 else "no valid backups"},
                             "backup": self.backups,
                             "archive": [{"id": "15-1", "min": "000000010000000000000001",
                                          "max": "000000010000000000000009"}] if self.backups else []}]
        now = self.now()
        archiver = {"archived_count": 9, "last_archived_wal": "000000010000000000000009",
                    "last_archived_at": now - 30, "failed_count": 3 if self.archive_fails else 0,
                    "last_failed_wal": None, "last_failed_at": now - 5 if self.archive_fails else None,
                    "in_recovery": False, "now": now}
        return json.dumps({"repo": self.repo, "info": None if self.problem else info, "info_error": self.problem,
                           "archiver": archiver if server else None,
                           "wal_ready_segments": 7 if self.archive_fails and server else 0,
                           "schedule": {"state": "ok", "message": "nothing due", "at": now - 60} if server else None,
                           "timeline": {"id": "00000001", "history": ""} if self.backups else None,
                           "writes": self.writes if server else None,
                           "now": now})

    def exec(self, argv: list[str], command: str) -> Result:
        if argv == ["backup-status"]:
            return Result(command, 0, self.status())
        if argv[:1] == ["pgbr"] and argv[-1] == "backup":
            if self.problem:
                return Result(command, 1, "", f"ERROR: [039]: {self.problem}\n")
            if self.busy:
                self.busy -= 1
                return Result(command, 50, "INFO: backup command begin 2.45: --repo1-cipher-type=aes-256-cbc\n"
                              "ERROR: [050]: unable to acquire lock on file '/tmp/pgbackrest/main-backup.lock': "
                              "Resource temporarily unavailable\n       HINT: is another pgBackRest process running?\n")
            kind = next(a.split("=", 1)[1] for a in argv if a.startswith("--type="))
            self.clock = self.now() + 1
            base = next((b["label"] for b in self.backups if b["type"] == "full"), None)
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.clock))
            label = f"{stamp}F" if kind == "full" or base is None else f"{base}_{stamp}D"
            self.backups.append({"label": label, "type": kind, "timestamp": {"start": self.clock - 1, "stop": self.clock},
                                 "info": {"size": 31457280, "repository": {"size": 9000, "delta": 9000}},
                                 "archive": {"start": "00000001000000000000000A", "stop": "00000001000000000000000A"}})
            return Result(command, 0, f"INFO: backup command end: completed successfully\n")
        if argv[:1] == ["pgbr"] and argv[-1] == "--output=json" and "info" in argv:
            if self.problem:
                return Result(command, 1, "", f"ERROR: [039]: {self.problem}\n")
            return Result(command, 0, json.dumps([{"name": "main", "backup": self.backups}]))
        if argv[:1] == ["pgbr"] and argv[-1] == "check":
            self.checks += 1
            if self.archive_fails or self.problem:
                return Result(command, 1, "", "ERROR: [082]: WAL segment was not archived before the 60000ms timeout\n")
            return Result(command, 0, "")
        return Result(command, 1, "", f"fake postgres: unsupported {argv}\n")

    def restore(self, args: list[str], command: str) -> Result:
        self.restores.append(args)
        if self.restore_fails:
            return Result(command, 1, "", self.restore_fails + "\n")
        return Result(command, 0, "INFO: restore command end: completed successfully\n")


def exec_argv(command: str) -> list[str]:
    """The argv remote.backup.in_database runs in the container."""
    return shlex.split(command.split('docker exec -i "$c" ', 1)[1])
