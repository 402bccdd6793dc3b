"""The reversal check (remote/migration_reversal.py) in the stack's real Django against a real
PostgreSQL: which migrations `inv rollback --unapply` may take back without losing a row."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from remote import migration_reversal

from .conftest import PG_BIN, VENV_BIN
from .helpers import STACK

MIGRATE = ["python", "manage.py", "migrate", "--noinput"]
INDEX = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.AddIndex("note", models.Index(fields=["text"], name="notes_text_idx"))]
'''
FIELD = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0002_text_index")]
    operations = [migrations.AddField("note", "priority", models.IntegerField(null=True))]
'''
TABLE = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0003_priority")]
    operations = [migrations.CreateModel("Tag", [("id", models.AutoField(primary_key=True)),
                                                 ("name", models.CharField(max_length=20))])]
'''
DATA = '''from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("notes", "0004_tag")]
    operations = [migrations.RunPython(lambda apps, schema: None)]
'''
NAMES = ["notes.0002_text_index", "notes.0003_priority", "notes.0004_tag", "notes.0005_data"]


@pytest.fixture(scope="module")
def django(tmp_path_factory, stack_env, postgres_server):
    """A copy of the stack's Django with four migrations more, on a database of its own."""
    root = tmp_path_factory.mktemp("reversal") / "django"
    shutil.copytree(STACK / "django", root, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in zip(NAMES, (INDEX, FIELD, TABLE, DATA)):
        (root / "notes" / "migrations" / f"{name.split('.')[1]}.py").write_text(text)
    pg = postgres_server
    subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, "reversal"],
                   check=True, env={**os.environ, "PGPASSWORD": pg.password}, timeout=30)
    env = {**stack_env, "POSTGRES_DB": "reversal"}

    def manage(*argv: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(VENV_BIN / "python"), *argv[1:]], cwd=root, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    manage(*MIGRATE)
    return manage


def verdicts(manage) -> dict[str, migration_reversal.Verdict]:
    out = manage(*migration_reversal.argv(MIGRATE, NAMES)).stdout
    return {v.migration: v for v in migration_reversal.parse(out, NAMES)}


def test_metadata_and_empty_additions_are_lossless_and_code_without_a_way_back_is_irreversible(django):
    found = verdicts(django)
    assert found["notes.0002_text_index"].lossless
    assert found["notes.0003_priority"].lossless          # the column holds nothing but NULL
    assert found["notes.0004_tag"].lossless               # the table has no row
    data = found["notes.0005_data"]
    assert not data.reversible and data.loses == ("irreversible: Raw Python operation",)


def test_a_value_written_into_a_new_column_or_table_makes_its_reversal_lossy(django):
    django("python", "manage.py", "shell", "-c",
           "from django.db import connection\n"
           "c = connection.cursor()\n"
           "c.execute(\"INSERT INTO notes_note (text, created_at, priority) VALUES ('kept', now(), 3)\")\n"
           "c.execute(\"INSERT INTO notes_tag (name) VALUES ('a'), ('b')\")\n")
    found = verdicts(django)
    assert found["notes.0003_priority"].loses == ("drops notes_note.priority, which holds 1 value(s) written since",)
    assert found["notes.0004_tag"].loses == ("drops table notes_tag, which holds 2 row(s)",)
    assert found["notes.0002_text_index"].lossless


def test_a_migration_the_release_does_not_have_is_not_reversible(django):
    out = django(*migration_reversal.argv(MIGRATE, ["notes.0099_elsewhere"])).stdout
    [verdict] = migration_reversal.parse(out, ["notes.0099_elsewhere"])
    assert not verdict.lossless and verdict.loses == ("not in this release's migrations",)
