"""The postgres image's backup scripts (stack/postgres: backup-env.sh, pgbr, backup-schedule.sh,
backup-status.sh) with a real PostgreSQL 15 and a real pgBackRest, as the image runs them:
WAL archived by the server's archive_command, an encrypted repository, and the deployer's own
restore options (remote/backup.py). The repository is a directory here; the lab's e2e tests
run the same scripts against an S3 endpoint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy import backups
from remote import backup
from tests.conftest import need

from .helpers import PROVIDED_BY, STACK, start, stop, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SCRIPTS = STACK / "postgres"
CANARY_PASS = "cipher-canary-Zq8wX3vN5tR7yB2m"
AS_PG = ["runuser", "-u", "postgres", "--"]


def image_postgres_args() -> list[str]:
    """The server options the image's CMD gives (after "postgres")."""
    for line in (SCRIPTS / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            argv = json.loads(line[4:])
            assert argv[0] == "postgres"
            return argv[1:]
    raise AssertionError("stack/postgres/Dockerfile has no CMD")


@dataclass
class Cluster:
    root: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self) -> None:
        log = self.root / "postgres.log"
        cmd = AS_PG + ["bash", "-c", f'source {SCRIPTS}/backup-env.sh && exec "$@"', "server",
                       str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                       "-c", "listen_addresses=", *image_postgres_args()]
        self.proc = start(cmd, log, env=self.env)
        wait_until(lambda: self.sql("SELECT 1") == "1", 60, "postgres", proc=self.proc, log=log)

    def stop(self) -> None:
        if self.proc is not None:
            subprocess.run(AS_PG + [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)
            stop(self.proc, timeout=30)
            self.proc = None

    def sql(self, query: str) -> str:
        out = subprocess.run([str(PG_BIN / "psql"), "-X", "-A", "-t", "-q", "-h", str(self.root), "-p", str(self.port),
                              "-U", "postgres", "-d", "postgres", "-c", query],
                             capture_output=True, text=True, timeout=30, env={**os.environ, **self.env})
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    def pgbr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(AS_PG + [str(SCRIPTS / "pgbr"), *args], capture_output=True, text=True,
                             timeout=300, env={**os.environ, **self.env})
        if check and out.returncode != 0:
            raise AssertionError(f"pgbr {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def script(self, name: str) -> str:
        out = subprocess.run(AS_PG + ["bash", str(SCRIPTS / name)], capture_output=True, text=True,
                             timeout=300, env={**os.environ, **self.env})
        assert out.returncode == 0, out.stderr
        return out.stdout


@pytest.fixture
def cluster(workdir, request):
    need((PG_BIN / "initdb").exists(), "PostgreSQL 15 (apt: postgresql-15)", provided_by=PROVIDED_BY)
    need(shutil.which("pgbackrest") is not None, "pgBackRest (apt: pgbackrest)", provided_by=PROVIDED_BY)
    need(shutil.which("jq") is not None, "jq (apt: jq)", provided_by=PROVIDED_BY)
    from lab.ports import free_port
    root = workdir / f"pgbr-{request.node.name[:30]}-{zlib.crc32(request.node.name.encode()):08x}"   # unique per parameter
    root.mkdir()
    (root / "repo").mkdir()
    for path in (root, root / "repo"):
        shutil.chown(path, "postgres", "postgres")
    env = {"PGDATA": str(root / "data"), "BACKUP_PG_SOCKET": str(root), "POSTGRES_USER": "postgres",
           "BACKUP_LOCAL_REPO": str(root / "repo"), "BACKUP_LOCK_PATH": str(root / "lock"),
           "BACKUP_CIPHER_PASS": CANARY_PASS, "BACKUP_STATUS_FILE": str(root / "schedule.json"),
           "PATH": f"{SCRIPTS}:{os.environ['PATH']}"}
    c = Cluster(root=root, port=free_port(), env={**env, "BACKUP_PG_PORT": ""})
    c.env["BACKUP_PG_PORT"] = str(c.port)
    subprocess.run(AS_PG + [str(PG_BIN / "initdb"), "-D", str(c.data), "-U", "postgres", "--auth-local=trust"],
                   check=True, capture_output=True, timeout=120)
    c.start()
    c.pgbr("stanza-create")
    yield c
    c.stop()


def insert_rows(c: Cluster, label: str, count: int) -> None:
    for i in range(count):
        c.sql(f"INSERT INTO rows (label) VALUES ('{label}-{i}')")  # one transaction each
        time.sleep(0.02)


def test_a_point_in_time_restore_brings_back_exactly_the_rows_committed_before_the_target(cluster):
    c = cluster
    c.sql("CREATE TABLE rows (id serial PRIMARY KEY, label text NOT NULL)")
    c.pgbr("--type=full", "backup")
    time.sleep(1.1)   # pgBackRest keeps a backup's stop time in whole seconds: a target must be after it
    insert_rows(c, "before", 20)
    target = c.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    time.sleep(0.05)
    insert_rows(c, "after", 20)
    c.pgbr("check")  # switches WAL and waits until it is archived, as the pre-restore backup does

    c.stop()
    c.pgbr(*backup.restore_args(target_time=target))
    c.start()

    labels = c.sql("SELECT string_agg(label, ',' ORDER BY id) FROM rows").split(",")
    assert labels == [f"before-{i}" for i in range(20)]
    assert c.sql("SELECT pg_is_in_recovery()") == "f"  # promoted: it takes writes again
    c.sql("INSERT INTO rows (label) VALUES ('after-restore')")


def test_a_restore_to_a_backup_label_stops_at_that_backup(cluster):
    c = cluster
    c.sql("CREATE TABLE rows (id serial PRIMARY KEY, label text NOT NULL)")
    insert_rows(c, "first", 3)
    c.pgbr("--type=full", "backup")
    first = json.loads(c.pgbr("info", "--output=json").stdout)[0]["backup"][-1]["label"]
    insert_rows(c, "second", 3)
    c.pgbr("--type=diff", "backup")

    c.stop()
    c.pgbr(*backup.restore_args(label=first))
    c.start()
    assert c.sql("SELECT count(*) FROM rows") == "3"


def test_a_backup_is_a_few_bundles_in_the_repository_not_one_object_per_database_file(cluster):
    """Spaces costs a round trip per object: a backup of a new database's ~1,000 small files was
    1,326 objects and its restore took 47 s in the lab (CI, 2026-12-08). Bundled, it is a few,
    and restores still bring back every row."""
    c = cluster
    c.sql("CREATE TABLE rows (id serial PRIMARY KEY, label text NOT NULL)")
    insert_rows(c, "kept", 5)
    database_files = sum(1 for p in c.data.rglob("*") if p.is_file())
    c.pgbr("--type=full", "backup")
    label = json.loads(c.pgbr("info", "--output=json").stdout)[0]["backup"][-1]["label"]
    stored = [p for p in (c.root / "repo" / "backup").rglob("*") if p.is_file() and label in str(p)]
    assert database_files > 500 and len(stored) < 50, (database_files, len(stored))

    c.stop()
    restored = c.pgbr(*backup.restore_args(label=label)).stdout   # its options at info level
    c.start()
    assert c.sql("SELECT count(*) FROM rows") == "5"
    assert "--process-max=4" in restored   # files fetched four at a time


def test_the_status_document_shows_backups_archiving_and_the_schedule_due(cluster):
    c = cluster
    c.env.update({"BACKUP_CHECK_SECONDS": "3600"})
    schedule = start(AS_PG + ["bash", str(SCRIPTS / "backup-schedule.sh")], c.root / "schedule.log", env=c.env)
    try:
        wait_until(lambda: json.loads((c.root / "schedule.json").read_text())["message"] == "full backup done",
                   120, "the schedule's first full backup", proc=schedule, log=c.root / "schedule.log")
    finally:
        stop(schedule)
    c.sql("SELECT pg_switch_wal()")
    c.pgbr("check")

    doc = json.loads(c.script("backup-status.sh"))
    assert doc["repo"] == "posix"
    (only,) = doc["info"][0]["backup"]
    assert only["type"] == "full"
    assert doc["archiver"]["archived_count"] >= 1 and doc["archiver"]["failed_count"] == 0
    assert doc["schedule"]["state"] == "ok"
    assert doc["info"][0]["cipher"] == "aes-256-cbc"


def test_the_status_document_counts_the_rows_written_per_table_and_the_deployer_sees_what_was_written_since(cluster):
    c = cluster
    c.sql("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
    c.sql("INSERT INTO notes (body) VALUES ('a'), ('b'), ('c')")
    wait_until(lambda: backups.parse_status(c.script("backup-status.sh")).writes.get("public.notes") == (3, 0, 0), 30,
               "the statistics of the first insert")
    before = backups.parse_status(c.script("backup-status.sh"))
    c.sql("INSERT INTO notes (body) VALUES ('d'), ('e')")
    c.sql("UPDATE notes SET body = 'A' WHERE body = 'a'")
    c.sql("DELETE FROM notes WHERE body = 'b'")
    wait_until(lambda: backups.parse_status(c.script("backup-status.sh")).writes.get("public.notes") == (5, 1, 1), 30,
               "the statistics of the later writes")
    after = backups.parse_status(c.script("backup-status.sh"))
    assert backups.written_since(before.writes, after.writes) == {"public.notes": (2, 1, 1)}


def test_the_repository_is_encrypted_and_the_cipher_pass_is_on_no_command_line(cluster):
    c = cluster
    c.pgbr("--type=full", "backup")
    # The server's processes carry the pass in their environment (0600 /proc), never in argv.
    cmdlines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert CANARY_PASS not in cmdlines
    # Every file of the repository is encrypted: no PostgreSQL page or WAL header in the clear.
    files = [p for p in (c.root / "repo").rglob("*") if p.is_file()]
    assert files
    assert not any(CANARY_PASS.encode() in p.read_bytes() for p in files)
    # A changed cipher pass cannot read the repository: info reports the stanza broken and a
    # backup fails (the deployer turns both into "BACKUP_CIPHER_PASS changed").
    wrong_env = {**os.environ, **c.env, "BACKUP_CIPHER_PASS": "another-pass-9f8e7d6c5b4a"}
    info = subprocess.run(AS_PG + [str(SCRIPTS / "pgbr"), "info", "--output=json"], capture_output=True,
                          timeout=60, env=wrong_env)
    assert json.loads(info.stdout.decode(errors="replace"), strict=False)[0]["status"]["code"] != 0
    backup_ = subprocess.run(AS_PG + [str(SCRIPTS / "pgbr"), "--type=full", "backup"], capture_output=True,
                             timeout=60, env=wrong_env)
    assert backup_.returncode != 0


def _labels(c: Cluster) -> list[str]:
    return c.sql("SELECT coalesce(string_agg(label, ',' ORDER BY id), '') FROM rows").split(",")


def _newest_label(c: Cluster) -> str:
    return json.loads(c.pgbr("info", "--output=json").stdout)[0]["backup"][-1]["label"]


@pytest.mark.parametrize("archived", [True, False], ids=["timeline-3-archived", "timeline-3-history-only"])
def test_latest_after_a_restore_and_its_undo_follows_the_live_timeline(cluster, archived):
    """A point-in-time restore (timeline 2) undone by restoring the backup taken before it
    (timeline 3) leaves the repository's newest backup on timeline 2, off the live history.
    "latest" (what a disaster recovery restores) is the end of the live timeline: every row
    written after the undo that reached the repository, none written on the abandoned timeline.
    Lost before timeline 3's first segment was archived, only its history file is there: the
    server follows it all the same (CI: the recovery's server refused to start)."""
    c = cluster
    c.sql("CREATE TABLE rows (id serial PRIMARY KEY, label text NOT NULL)")
    c.pgbr("--type=full", "backup")
    time.sleep(1.1)
    target = c.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    time.sleep(0.05)
    insert_rows(c, "kept", 3)
    c.pgbr("--type=diff", "backup")                 # the pre-restore backup, as `inv restore` takes it
    pre_restore = _newest_label(c)
    c.pgbr("check")
    c.stop()
    c.pgbr(*backup.restore_args(target_time=target))  # the mistake: timeline 2, without the kept rows
    c.start()
    insert_rows(c, "abandoned", 2)
    c.pgbr("--type=diff", "backup")                 # the backup taken before the undo, on timeline 2
    c.pgbr("check")
    c.stop()
    c.pgbr(*backup.restore_args(label=pre_restore))   # the undo: timeline 3
    c.start()
    insert_rows(c, "after-undo", 2)
    c.pgbr("check")
    c.stop()
    if not archived:   # lost before timeline 3's first segment reached the repository
        for segment in (c.root / "repo" / "archive").rglob("00000003000000000000000*"):
            segment.unlink()
    status = backups.parse_status(c.script("backup-status.sh"))   # what the deployer chooses from

    shutil.rmtree(c.data)                          # the droplet is lost
    c.data.mkdir(mode=0o700)
    shutil.chown(c.data, "postgres", "postgres")
    base = status.restore_base()
    assert base is not None and base.label == pre_restore   # the newest backup is the abandoned one's
    c.pgbr(*backup.restore_args(base=base.label))
    c.start()
    after_undo = [f"after-undo-{i}" for i in range(2)] if archived else []
    assert _labels(c) == [f"kept-{i}" for i in range(3)] + after_undo
