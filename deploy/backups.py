"""The database's backups as the deployer sees them (pure): the status document the postgres
image prints (stack/postgres/backup-status.sh) read into backups, a recoverable window and
checks, and the restore targets an operator may ask for, validated before anything changes."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from core.errors import EXIT_CONFIG, OperatorError
from deploy.checks.model import CheckResult

# pgBackRest's stop time of a backup that is still running is unknown: a day's differential
# or a week's full is "late" past these (the schedule's own periods, plus an hour's slack).
BACKUP_AGE_WARN = timedelta(hours=25)
# archive_timeout is 60 s; a busy database archives more often, an idle one not at all.
WAL_WAITING_WARN = 3
SAME_DROPLET_FIX = ("set SPACES_BUCKET, SPACES_REGION, SPACES_KEY, SPACES_SECRET and BACKUP_CIPHER_PASS "
                    "(docs/backups.md) and deploy: backups then leave the droplet")


class BackupError(OperatorError):
    """A backup, restore or its input failed; the message names what and the way out."""


class DatabaseNotRunning(BackupError):
    """No PostgreSQL container runs to ask: the services' state says why."""


class RestoreInputError(BackupError):
    exit_code = EXIT_CONFIG
    outcome = "config-error"


@dataclass(frozen=True)
class BackupSet:
    label: str
    kind: str                 # full, diff or incr
    started: datetime
    stopped: datetime
    size: int                 # the database's size at the backup
    stored: int               # bytes this backup takes in the repository (compressed, encrypted)
    wal_start: str
    wal_stop: str
    lsn_stop: int = 0         # where the backup is consistent (pgBackRest's lsn.stop)

    @property
    def timeline(self) -> int:
        """The timeline the backup was taken on: its first WAL segment's name starts with it."""
        try:
            return int(self.wal_start[:8], 16)
        except ValueError:
            return 0

    def record(self) -> dict[str, Any]:
        return {"label": self.label, "type": self.kind, "started": self.started.isoformat(),
                "stopped": self.stopped.isoformat(), "size": self.size, "stored": self.stored,
                "wal": [self.wal_start, self.wal_stop], "timeline": self.timeline}


@dataclass(frozen=True)
class BackupStatus:
    repo: str                          # s3 or posix
    backups: tuple[BackupSet, ...]
    problem: str                       # why the repository cannot be read; "" when it can
    wal_range: tuple[str, str] | None  # archived WAL, oldest and newest segment
    last_archived_at: datetime | None
    archive_failures: int
    last_failed_at: datetime | None
    wal_waiting: int                   # segments PostgreSQL holds until they are archived
    schedule_state: str
    schedule_message: str
    now: datetime
    # The newest timeline in the archive (the live database's, as every restore starts a new,
    # higher one) and its history: (parent timeline, LSN where it was left), oldest first.
    timeline: int = 0                  # 0: unknown (an image that does not report it)
    history: tuple[tuple[int, int], ...] = ()
    # Rows written per table since the statistics began: (inserted, updated, deleted); None
    # when the server did not say (stopped, or an image that does not report it).
    writes: dict[str, tuple[int, int, int]] | None = None

    @property
    def off_droplet(self) -> bool:
        return self.repo == "s3"

    @property
    def earliest(self) -> datetime | None:
        """The oldest point a restore can reach: the end of the oldest backup."""
        return self.backups[0].stopped if self.backups else None

    @property
    def latest(self) -> datetime | None:
        """The newest point a restore can reach: the newest archived WAL (or backup)."""
        points = [p for p in (self.last_archived_at, self.backups[-1].stopped if self.backups else None) if p]
        return max(points) if points else None

    def find(self, label: str) -> BackupSet:
        for b in self.backups:
            if b.label == label:
                return b
        known = ", ".join(b.label for b in self.backups) or "none yet"
        raise RestoreInputError(f"no backup is labelled {label!r}",
                                f"use one of: {known} (`inv backups` lists them)")

    def on_live_history(self, backup: BackupSet) -> bool:
        """Whether the live timeline descends from ``backup``: PostgreSQL can replay from it to the
        live timeline's end. A backup on a timeline a restore abandoned cannot."""
        if not self.timeline or backup.timeline == self.timeline:
            return True
        return any(parent == backup.timeline and backup.lsn_stop <= left for parent, left in self.history)

    def restore_base(self, before: datetime | None = None) -> BackupSet | None:
        """The newest backup a restore to the live timeline's end (``before`` None) or to the time
        ``before`` starts from: on the live history, ended before the target."""
        usable = [b for b in self.backups if self.on_live_history(b) and (before is None or b.stopped <= before)]
        return usable[-1] if usable else None

    def record(self) -> dict[str, Any]:
        return {"repository": "spaces" if self.off_droplet else "droplet", "problem": self.problem,
                "backups": [b.record() for b in self.backups],
                "window": [t.isoformat() if t else None for t in (self.earliest, self.latest)],
                "wal_range": list(self.wal_range) if self.wal_range else None,
                "wal_waiting_segments": self.wal_waiting, "archive_failures": self.archive_failures,
                "schedule": {"state": self.schedule_state, "message": self.schedule_message}}


def _at(epoch: Any) -> datetime | None:
    return datetime.fromtimestamp(float(epoch), timezone.utc) if epoch not in (None, "") else None


def lsn(text: str) -> int:
    """A PostgreSQL LSN ("16/B374D848") as a number; 0 when unreadable."""
    high, _, low = (text or "").partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        return 0


def parse_history(text: str) -> tuple[tuple[int, int], ...]:
    """A timeline history file: "parent<TAB>switchpoint<TAB>reason" per line, comments skipped."""
    out = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and lsn(fields[1]):
            out.append((int(fields[0]), lsn(fields[1])))
    return tuple(out)


def _timeline(doc: dict[str, Any]) -> tuple[int, tuple[tuple[int, int], ...]]:
    found = doc.get("timeline") or {}
    try:
        return int(found.get("id") or "0", 16), parse_history(found.get("history") or "")
    except ValueError:
        return 0, ()


def parse_status(text: str) -> BackupStatus:
    """backup-status.sh's JSON; a stanza pgBackRest reports broken becomes ``problem``."""
    try:
        doc = json.loads(text, strict=False)
    except json.JSONDecodeError:
        raise BackupError("the postgres service printed no backup status (is it the image with pgBackRest, "
                          "and running?)", "deploy the current release (`inv deploy --update-only`), then retry") from None
    stanza = (doc.get("info") or [{}])[0] if isinstance(doc.get("info"), list) else {}
    problem = (doc.get("info_error") or "").strip()
    code = (stanza.get("status") or {}).get("code", 0)
    if not problem and code not in (0, 2):  # 2: the stanza exists but holds no backup yet
        problem = (stanza.get("status") or {}).get("message", f"status code {code}")
        for repo in stanza.get("repo") or []:
            detail = (repo.get("status") or {}).get("message")
            if detail:
                problem = f"{problem}: {detail}"
    backups = tuple(
        BackupSet(label=b["label"], kind=b["type"], started=_at(b["timestamp"]["start"]),
                  stopped=_at(b["timestamp"]["stop"]), size=int(b["info"]["size"]),
                  stored=int(b["info"]["repository"]["delta"]),
                  wal_start=(b.get("archive") or {}).get("start") or "", wal_stop=(b.get("archive") or {}).get("stop") or "",
                  lsn_stop=lsn((b.get("lsn") or {}).get("stop") or ""))
        for b in stanza.get("backup") or [])
    archives = [a for a in stanza.get("archive") or [] if a.get("min")]
    wal_range = (archives[0]["min"], archives[-1]["max"]) if archives else None
    archiver = doc.get("archiver") or {}
    schedule = doc.get("schedule") or {}
    timeline, history = _timeline(doc)
    return BackupStatus(repo=doc.get("repo") or "", backups=backups, problem=problem, wal_range=wal_range,
                        last_archived_at=_at(archiver.get("last_archived_at")),
                        archive_failures=int(archiver.get("failed_count") or 0),
                        last_failed_at=_at(archiver.get("last_failed_at")),
                        wal_waiting=int(doc.get("wal_ready_segments") or 0),
                        schedule_state=schedule.get("state", ""), schedule_message=schedule.get("message", ""),
                        now=_at(doc.get("now")) or datetime.now(timezone.utc),
                        timeline=timeline, history=history, writes=_writes(doc.get("writes")))


def _writes(found: Any) -> dict[str, tuple[int, int, int]] | None:
    if not isinstance(found, dict):
        return None
    try:
        return {str(table): (int(n[0]), int(n[1]), int(n[2])) for table, n in found.items()}
    except (TypeError, ValueError, IndexError):
        return None


def written_since(then: dict[str, Any] | None, now: dict[str, Any] | None) -> dict[str, tuple[int, int, int]] | None:
    """Rows inserted, updated and deleted per table between two readings of the counters (each
    table that changed); None when either reading is missing or the counters went back (the
    statistics were reset by a crash or a restore in between: the count is unknown)."""
    if then is None or now is None:
        return None
    out = {}
    for table, counts in now.items():
        before = tuple(then.get(table) or (0, 0, 0))
        diff = tuple(int(a) - int(b) for a, b in zip(counts, before))
        if any(d < 0 for d in diff):
            return None
        if any(diff):
            out[table] = diff
    return out


def _age(delta: timedelta) -> str:
    return age(int(delta.total_seconds()))


def age(seconds: int) -> str:
    """A span for people: "45 s", "12 min", "3 h"."""
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def checks(status: BackupStatus) -> list[CheckResult]:
    """What verify says about the backups: where they are, how old the last one is, whether
    WAL reaches the repository."""
    out = []
    if status.off_droplet:
        out.append(CheckResult("backups: off the droplet", "pass", status.repo, "s3", "the repository is a Spaces bucket"))
    else:
        out.append(CheckResult("backups: off the droplet", "warn", "droplet", "s3",
                               f"backups are on the same droplet as the data: {SAME_DROPLET_FIX}"))
    if status.problem:
        # The fix first: a redacted secret in pgBackRest's words may mask the rest of the line.
        out.append(CheckResult("backups: repository", "fail", "unreadable", "readable",
                               f"the backup repository cannot be used. {repository_fix(status.problem)}. "
                               f"pgBackRest: {status.problem}"))
        return out
    newest = status.backups[-1] if status.backups else None
    if newest is None:
        state = "warn"
        message = (f"no backup yet (the schedule: {status.schedule_message or 'not run yet'}); "
                   "`inv backup` takes one now")
        out.append(CheckResult("backups: last backup", state, None, f"< {_age(BACKUP_AGE_WARN)}", message))
    else:
        age = status.now - newest.stopped
        state = "pass" if age <= BACKUP_AGE_WARN else "warn"
        message = f"{newest.kind} backup {newest.label}, {_age(age)} old"
        if state == "warn":
            message += f" (the schedule: {status.schedule_message or 'no round recorded'}); `inv backup` takes one now"
        out.append(CheckResult("backups: last backup", state, _age(age), f"< {_age(BACKUP_AGE_WARN)}", message))
    failing = status.last_failed_at is not None and (status.last_archived_at is None
                                                      or status.last_failed_at > status.last_archived_at)
    waiting = f"{status.wal_waiting} WAL segment(s) ({status.wal_waiting * 16} MiB) wait on the droplet"
    if failing:
        out.append(CheckResult("backups: WAL archiving", "fail", waiting, "archived",
                               f"archiving WAL to the repository fails ({status.archive_failures} failure(s)); {waiting}; "
                               "past BACKUP_WAL_QUEUE_MAX (2 GiB) PostgreSQL drops them to keep running and point-in-time "
                               "recovery has a gap until the next backup. Check the repository's reachability and keys"))
    elif status.wal_waiting > WAL_WAITING_WARN:
        out.append(CheckResult("backups: WAL archiving", "warn", waiting, "archived", f"archiving is behind: {waiting}"))
    else:
        last = status.last_archived_at
        out.append(CheckResult("backups: WAL archiving", "pass", _age(status.now - last) if last else "none yet",
                               "archived", "WAL reaches the repository" + (f"; last segment {_age(status.now - last)} ago" if last else "")))
    return out


def repository_fix(problem: str) -> str:
    """The way out for pgBackRest's usual complaints, by what it said: its ERROR lines when
    there are any (the options it echoes at INFO name the cipher, the keys and the repository)."""
    errors = [line for line in problem.splitlines() if "ERROR" in line or "HINT" in line]
    text = "\n".join(errors or [problem]).lower()
    if "unable to acquire lock" in text:
        return ("another backup is running (the schedule's, every BACKUP_CHECK_SECONDS, or another `inv backup`): "
                "wait for it to end (`inv backups` lists it then) and run this again")
    if "invalidaccesskeyid" in text or "signaturedoesnotmatch" in text or "403" in text or "accessdenied" in text:
        return "Check SPACES_KEY and SPACES_SECRET (a Spaces access key with access to SPACES_BUCKET), then deploy"
    if "nosuchbucket" in text or "404" in text:
        return "Create the bucket SPACES_BUCKET in SPACES_REGION (or fix the name), then deploy"
    if "cipher" in text or "decrypt" in text or "unable to read" in text or "other" == text.strip():
        return ("BACKUP_CIPHER_PASS may have changed: the repository can only be read with the pass it was made with; "
                "put the old one back")
    if "database does not match" in text or "system-id" in text or "stanza" in text:
        return ("The repository holds another database's backups (a lost droplet's, when this one was deployed without "
                "--restore): `inv destroy` then `inv deploy --restore latest` brings that data back; or set "
                "BACKUP_REPO_PATH to a new path to start afresh")
    if "resolve" in text or "connect" in text or "timeout" in text or "timed out" in text:
        return "The repository cannot be reached from the droplet: check SPACES_ENDPOINT/SPACES_REGION and the droplet's egress"
    return "pgBackRest's own words are in backups/ in the run folder"


_ZONE = re.compile(r"(Z|[+-]\d{2}(:?\d{2})?)$", re.I)


def parse_target(text: str) -> datetime:
    """An ISO 8601 time with a zone (2026-12-06 03:00:00+00, 2026-12-06T03:00:00Z), in UTC."""
    raw = text.strip()
    if not _ZONE.search(raw):
        raise RestoreInputError(f"--to {raw!r} has no time zone",
                                "add one, e.g. --to '2026-12-06 03:00:00+00' or --to 2026-12-06T03:00:00Z")
    iso = raw[:-1] + "+00:00" if raw[-1] in "zZ" else raw
    if re.search(r"[+-]\d{2}$", iso):
        iso += ":00"
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise RestoreInputError(f"--to {raw!r} is not an ISO 8601 time",
                                "write it as YYYY-MM-DD HH:MM:SS with a zone, e.g. '2026-12-06 03:00:00+00'") from None
    return parsed.astimezone(timezone.utc)


def pg_time(moment: datetime) -> str:
    """A time as pgBackRest's --target takes it (UTC, microseconds)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def check_target(status: BackupStatus, target: datetime) -> None:
    """Refuse, before anything changes, a time no backup and WAL can reach."""
    if status.problem:
        raise BackupError(f"the backup repository cannot be used: {status.problem}", repository_fix(status.problem))
    earliest, latest = status.earliest, status.latest
    if earliest is None:
        raise RestoreInputError("there is no backup to restore from", "`inv backup` takes the first one")
    window = f"the recoverable window is {earliest.isoformat()} to {latest.isoformat() if latest else '?'}"
    if target < earliest:
        raise RestoreInputError(f"{target.isoformat()} is before the first backup ended", f"pick a later time: {window}")
    if target > status.now:
        raise RestoreInputError(f"{target.isoformat()} is in the future (the droplet's clock says {status.now.isoformat()})",
                                f"pick a time in the past: {window}")
