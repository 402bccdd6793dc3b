"""Backups on the lab (issue 21): pgBackRest archiving to the lab's S3 endpoint (moto behind TLS,
keys enforced) exactly as to DigitalOcean Spaces.

- PITR is exact: `inv restore --to T` keeps every row committed before T and none after;
- a restore made by mistake is undone with the backup it took first;
- disaster recovery under a writer (one row every 100 ms): the droplet is deleted through the
  API at a moment drawn while the writer runs; `inv deploy --restore latest` brings up a new one.
  Rows lost (RPO) at most 60 s worth; delete -> /api/health 200 with the rows (RTO) at most 5 min;
- a canary: no Spaces secret, cipher pass or database password in any run folder or output.

Runs last on the lab the other e2e modules deploy (conftest.py orders it: the recovery replaces
the droplet); run alone, it makes the deployment first. Figures go to .test-logs/backup-figures.json."""
from __future__ import annotations

import json
import random
import re
import shlex
import subprocess
import threading
import time

import pytest
import requests

from lab import config as labconfig
from lab.docker import list_labelled
from tests.e2e.conftest import QUIET, REPO, STATE
from tests.e2e.test_lab_deploy import _notes, api

pytestmark = [pytest.mark.lab, pytest.mark.docker]

FIGURES = REPO / ".test-logs" / "backup-figures.json"
PG = "$(docker ps -q --filter label=com.docker.compose.project=stackdeploy --filter label=com.docker.compose.service=postgres)"


def _droplet(lab) -> str:
    cfg = labconfig.load(environ=lab.env())
    [cid] = list_labelled("container", cfg.label, "stackdeploy.lab.kind=droplet")
    return cid


def psql_argv(lab) -> str:
    return (f"docker exec -i {PG} psql -X -q -A -t -v ON_ERROR_STOP=1 "
            f"-U {shlex.quote(lab.values['POSTGRES_USER'])} -d {shlex.quote(lab.values['POSTGRES_DB'])}")


def sql(lab, statements: str, timeout: float = 120) -> str:
    """SQL in the droplet's PostgreSQL, each statement its own transaction (psql reads stdin)."""
    res = subprocess.run(["docker", "exec", "-i", _droplet(lab), "sh", "-c", psql_argv(lab)], input=statements,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr
    return res.stdout


def rows(lab, table: str) -> list[int]:
    return [int(n) for n in sql(lab, f"SELECT n FROM {table} ORDER BY n;\n").split()]


def record(**figures) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    old = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps({**old, **figures}, indent=2) + "\n")
    print(json.dumps(figures))


def undo_label(output: str) -> str:
    found = re.search(r"`inv restore --backup (\S+)` undoes this restore", output)
    assert found, output[-3000:]
    return found.group(1)


@pytest.fixture(scope="module")
def deployed(deployed):
    assert deployed.values.get("SPACES_BUCKET"), "the lab prints Spaces settings (inv lab.env)"
    return deployed


def test_backups_reach_the_s3_endpoint_and_verify_sees_them(deployed):
    res = deployed.inv("backup", extra=QUIET)
    assert res.returncode == 0, res.stdout[-3000:]
    made = deployed.manifest()["details"]["backup"]
    res = deployed.inv("backups", "--json", extra=QUIET)
    assert res.returncode == 0, res.stdout[-3000:]
    doc = json.loads(res.stdout[res.stdout.index("{\n"):res.stdout.rindex("}") + 1])
    assert doc["repository"] == "spaces" and made["label"] in [b["label"] for b in doc["backups"]]
    res = deployed.inv("verify", extra=QUIET)
    checks = {c["name"]: c["status"] for c in deployed.manifest()["checks"]}
    assert {k: v for k, v in checks.items() if k.startswith("backups:")} == {
        "backups: off the droplet": "pass", "backups: last backup": "pass",
        "backups: WAL archiving": "pass"}, checks


def test_restore_to_a_moment_keeps_every_row_committed_before_it_and_none_after_and_is_undone(deployed):
    lab = deployed
    sql(lab, "CREATE TABLE IF NOT EXISTS pitr_probe (n int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp());\n"
             "TRUNCATE pitr_probe;\n")
    sql(lab, "".join(f"INSERT INTO pitr_probe (n) VALUES ({n});\n" for n in range(1, 51)))
    time.sleep(1)
    moment = sql(lab, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00';\n").strip()
    time.sleep(1)
    sql(lab, "".join(f"INSERT INTO pitr_probe (n) VALUES ({n});\n" for n in range(51, 101)))
    t0 = time.monotonic()
    res = lab.inv("restore", "--to", moment, "--yes", extra=QUIET)
    restore_s = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert rows(lab, "pitr_probe") == list(range(1, 51))          # before T: all; after T: none
    if "note" in STATE:
        session, base = api(lab, STATE["ip"])
        assert STATE["note"] in _notes(lab)
    undo = undo_label(res.stdout)
    t0 = time.monotonic()
    res = lab.inv("restore", "--backup", undo, "--yes", extra=QUIET)
    undo_s = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert rows(lab, "pitr_probe") == list(range(1, 101))         # the mistaken restore undone
    record(restore_to_time_seconds=round(restore_s, 1), undo_restore_seconds=round(undo_s, 1))


DROP_CREATED_AT = """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [
        migrations.AlterModelOptions(name="note", options={"ordering": ["-id"]}),
        migrations.RemoveField(model_name="note", name="created_at"),
    ]
"""


def _without_created_at(models: str) -> str:
    """Release B's notes model: the created_at column dropped (its data with it)."""
    out = models.replace("    created_at = models.DateTimeField(auto_now_add=True)\n", "")
    out = out.replace('ordering = ["-created_at", "-id"]', 'ordering = ["-id"]')
    out = out.replace(', "created_at": self.created_at.isoformat()', "")
    assert out.count("created_at") == 0, out
    return out


def _inserted(lab, table: str) -> int:
    """Rows inserted into ``table`` so far, as PostgreSQL's statistics have them now."""
    return int(sql(lab, f"SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = '{table}';\n").strip() or 0)


def _live(lab) -> str:
    """The live release's id, from `inv releases` (* marks it)."""
    res = lab.inv("releases", extra=QUIET)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("* "))


def _notes_with_dates(lab) -> dict[str, str | None]:
    session, base = api(lab, STATE["ip"])
    r = session.get(f"{base}/notes", timeout=15)
    assert r.status_code == 200, r.text
    body = r.json()
    items = body if isinstance(body, list) else body.get("notes", body.get("results", []))
    return {n["text"]: n.get("created_at") for n in items}


def test_a_migration_dropping_a_column_is_backed_up_first_refused_by_rollback_and_undone_by_rollback_restore(deployed):
    """Issue 22: release B drops notes.created_at; deploy backs up first; `inv rollback` is
    refused naming both ways out; `inv rollback --restore` lists what it loses, then brings
    the column and its data back under release A."""
    lab = deployed
    session, base = api(lab, STATE["ip"])
    kept = f"kept-{time.time_ns()}"
    assert session.post(f"{base}/notes", json={"text": kept}, timeout=15).status_code == 201
    dated = _notes_with_dates(lab)
    assert dated[kept]
    release_a = _live(lab)
    models = lab.stack / "django" / "notes" / "models.py"
    migration = lab.stack / "django" / "notes" / "migrations" / "0002_drop_created_at.py"
    original = models.read_text()
    try:
        models.write_text(_without_created_at(original))
        migration.write_text(DROP_CREATED_AT)
        res = lab.inv("deploy", "--update-only", extra=QUIET)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        data = lab.manifest()
        applied = data["details"]["migrations"]
        assert applied["applied"] == ["notes.0002_drop_created_at"] and applied["backup"], applied
        names = [s["name"] for s in data["steps"]]
        assert names.index("backup") < names.index("up")                 # the backup came before the migration
        release_b = _live(lab)
        assert release_b != release_a
        assert all(v is None for v in _notes_with_dates(lab).values())   # the column is gone
        lost = f"lost-{time.time_ns()}"
        inserted = _inserted(lab, "notes_note")
        assert session.post(f"{base}/notes", json={"text": lost}, timeout=15).status_code == 201
        # The loss listing counts rows from PostgreSQL's statistics, which a backend flushes up to
        # 10 s after it goes idle (PGSTAT_IDLE_INTERVAL): the count is exact once they have it.
        deadline = time.monotonic() + 20
        while _inserted(lab, "notes_note") == inserted and time.monotonic() < deadline:
            time.sleep(0.5)

        res = lab.inv("rollback", extra=QUIET)
        said = " ".join((res.stdout + res.stderr).split())
        assert res.returncode == 1, said[-3000:]
        assert "expects an older schema" in said and "notes.0002_drop_created_at" in said
        assert "inv rollback --keep-schema" in said and "inv rollback --restore" in said
        assert _live(lab) == release_b

        t0 = time.monotonic()
        res = lab.inv("rollback", "--restore", "--yes", extra=QUIET)
        seconds = time.monotonic() - t0
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        assert f"restoring backup {applied['backup']} loses every write committed since it ended" in res.stdout
        assert re.search(r"public\.notes_note: 1 inserted, 0 updated, 0 deleted", res.stdout), res.stdout[-3000:]
        assert _live(lab) == release_a
        now = _notes_with_dates(lab)
        assert now[kept] == dated[kept]          # the column and its data are back
        assert lost not in now                   # written after the backup: lost, as listed
        record(rollback_restore_seconds=round(seconds, 1))
    finally:
        models.write_text(original)
        migration.unlink(missing_ok=True)


ADD_TAGS = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.AddField(model_name="note", name="tags", field=models.CharField(max_length=100,
                                                                                         default=""))]
"""
BROKEN = """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("notes", "0002_note_tags")]
    operations = [migrations.RunSQL("UPDATE notes_note SET no_such_column = 1", migrations.RunSQL.noop)]
"""


def test_a_migration_failing_halfway_leaves_the_database_as_before_and_the_release_live(deployed):
    """Issue 22: release C brings two migrations; the second fails after Django committed the
    first. The deploy unapplies the first, says so, and the live release serves on, unchanged."""
    lab = deployed
    live = _live(lab)
    folder = lab.stack / "django" / "notes" / "migrations"
    try:
        (folder / "0002_note_tags.py").write_text(ADD_TAGS)
        (folder / "0003_broken.py").write_text(BROKEN)
        res = lab.inv("deploy", "--update-only", extra=QUIET)
        said = " ".join((res.stdout + res.stderr).split())
        assert res.returncode == 1, said[-3000:]
        assert "notes.0002_note_tags, applied before the failure, unapplied (back to notes 0001_initial): the " \
               "database is as before" in said, said[-3000:]
        assert f"still serving release {live}" in said and _live(lab) == live
        columns = sql(lab, "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes_note';\n")
        assert "tags" not in columns.split()
        applied = sql(lab, "SELECT name FROM django_migrations WHERE app = 'notes' ORDER BY id;\n").split()
        assert "0002_note_tags" not in applied and "0003_broken" not in applied, applied
        assert _notes(lab) is not None                                    # the live release serves
    finally:
        for name in ("0002_note_tags.py", "0003_broken.py"):
            (folder / name).unlink(missing_ok=True)


TEXT_INDEX = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.AddIndex("note", models.Index(fields=["text"], name="notes_text_idx"))]
"""


def test_a_rollback_across_a_migration_that_loses_nothing_is_offered_and_done_by_unapplying_it(deployed):
    """Issue 22: release D adds an index. `inv rollback` is refused and offers --unapply (Django,
    asked in a one-off of D against the live database, can reverse it without losing a row);
    `inv rollback --unapply` drops the index with D's code, then puts the release before it live."""
    lab = deployed
    before = _live(lab)
    migration = lab.stack / "django" / "notes" / "migrations" / "0002_text_index.py"
    try:
        migration.write_text(TEXT_INDEX)
        res = lab.inv("deploy", "--update-only", extra=QUIET)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        assert "notes_text_idx" in sql(lab, "SELECT indexname FROM pg_indexes WHERE tablename = 'notes_note';\n")
        res = lab.inv("rollback", extra=QUIET)
        said = " ".join((res.stdout + res.stderr).split())
        assert res.returncode == 1 and "expects an older schema" in said, said[-3000:]
        assert "Django can take them back without losing a row: `inv rollback --unapply`" in said, said[-3000:]
        t0 = time.monotonic()
        res = lab.inv("rollback", "--unapply", extra=QUIET)
        seconds = time.monotonic() - t0
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        assert lab.manifest()["details"]["rollback_schema"]["unapplied"] == ["notes.0002_text_index"]
        assert _live(lab) == before
        assert "notes_text_idx" not in sql(lab, "SELECT indexname FROM pg_indexes WHERE tablename = 'notes_note';\n")
        applied = sql(lab, "SELECT name FROM django_migrations WHERE app = 'notes' ORDER BY id;\n").split()
        assert "0002_text_index" not in applied, applied
        assert _notes(lab) is not None
        record(rollback_unapply_seconds=round(seconds, 1))
    finally:
        migration.unlink(missing_ok=True)


class Writer(threading.Thread):
    """One row every 100 ms through one psql session on the droplet; a row counts once psql has
    echoed after its INSERT (autocommit: committed)."""

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.acked: dict[int, float] = {}
        self.proc = subprocess.Popen(["docker", "exec", "-i", _droplet(lab), "sh", "-c", psql_argv(lab)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("ack "):
                self.acked[int(line.split()[1])] = time.time()

    def run(self) -> None:
        self.reader.start()
        n = 0
        try:
            while self.proc.poll() is None:
                n += 1
                self.proc.stdin.write(f"INSERT INTO rpo_probe (n) VALUES ({n});\n\\echo ack {n}\n")
                self.proc.stdin.flush()
                time.sleep(0.1)
        except (BrokenPipeError, OSError):
            pass


def _delete_droplet(lab) -> None:
    endpoint = lab.values["DIGITALOCEAN_END_POINT"].rstrip("/")
    endpoint = endpoint if endpoint.endswith("/v2") else endpoint + "/v2"
    headers = {"Authorization": f"Bearer {lab.values['DIGITALOCEAN_TOKEN']}"}
    answer = requests.get(f"{endpoint}/droplets", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    [droplet] = [d for d in answer.json()["droplets"] if d["name"] == "stackdeploy-1"]
    r = requests.delete(f"{endpoint}/droplets/{droplet['id']}", headers=headers, timeout=30)
    assert r.status_code == 204, r.text


def test_disaster_recovery_after_the_droplet_is_deleted_under_a_writer(deployed):
    lab = deployed
    sql(lab, "CREATE TABLE IF NOT EXISTS rpo_probe (n int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp());\n")
    # The table is set-up, not a measured write: in the repository before the writer starts (a
    # droplet lost within archive_timeout of its creation would take the table with it).
    archived = subprocess.run(["docker", "exec", _droplet(lab), "sh", "-c", f"docker exec {PG} pgbr check"],
                              capture_output=True, text=True, timeout=300)
    assert archived.returncode == 0, archived.stdout + archived.stderr
    writer = Writer(lab)
    writer.start()
    wait = random.uniform(20, 60)    # drawn now, while the writer runs: the test does not pick the moment
    time.sleep(wait)
    deleted_at = time.monotonic()
    _delete_droplet(lab)
    writer.join(timeout=60)
    time.sleep(0.5)
    acked = max(writer.acked)
    res = lab.inv("deploy", "--restore", "latest", "--yes", extra=QUIET, timeout=900)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
    STATE["ip"] = lab.manifest()["target"]["ip"]
    session, base = api(lab, STATE["ip"])
    while True:
        try:
            if session.get(f"{base}/health", timeout=10).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() - deleted_at < 600, "no /api/health 200 within 10 minutes"
        time.sleep(1)
    restored = rows(lab, "rpo_probe")
    rto = time.monotonic() - deleted_at
    assert restored == list(range(1, len(restored) + 1)), "the restored rows have a hole"
    newest = restored[-1] if restored else 0
    lost = acked - newest
    # from the newest row restored (none: from just before the first) to the last acknowledged
    lost_s = writer.acked[acked] - (writer.acked[newest] if newest else writer.acked[1] - 0.1)
    record(dr_rows_acknowledged=acked, dr_rows_restored=newest, dr_rows_lost=lost, dr_seconds_lost=round(lost_s, 1),
           dr_rto_seconds=round(rto, 1), dr_writer_ran_seconds=round(wait, 1))
    assert lost_s <= 60, f"{lost} rows ({lost_s:.1f} s) lost"
    assert rto <= 300, f"delete -> /api/health 200 with the rows took {rto:.0f} s"
    if "note" in STATE:
        assert STATE["note"] in _notes(lab)


def test_no_secret_in_any_run_folder_or_output(deployed):
    lab = deployed
    secrets = [lab.values[k] for k in ("SPACES_KEY", "SPACES_SECRET", "BACKUP_CIPHER_PASS", "POSTGRES_PASSWORD",
                                       "POSTGRES_APP_PASSWORD") if len(lab.values.get(k, "")) >= 8]
    assert len(secrets) == 5
    secrets += STATE.get("rotated_out", [])       # values test_rotation.py rotated out are secrets still
    places = [p for p in lab.logs.rglob("*") if p.is_file()]
    assert any("backup" in str(p) for p in places)      # the backup tasks' folders are among them
    # every inv command's output, but `inv lab.env`'s, which prints the settings on purpose
    outputs = [block for block in (lab.tmp / "inv.log").read_text(errors="replace").split("\n$ ")
               if not block.lstrip("$ ").startswith("lab.env")]
    for path, text in [(p, p.read_text(errors="replace")) for p in places] + [("inv output", o) for o in outputs]:
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {path}"
