"""`inv rollback --restore` against the fake edges: a rollback across migrations that drop or
rename puts the database back to the backup taken before them, after listing what that loses
and the typed name; every refusal changes nothing."""
from __future__ import annotations

import io

import pytest

from deploy import flows
from tests.flows.test_flows import _change_django

WRITERS = {"api", "django", "worker", "beat", "flower"}


@pytest.fixture
def migrated(world):
    """Release A live, then release B, whose migration drops a column, after its backup."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.before = world.current()
    world.docker.pending_migrations = ["notes.0002_drop_body"]
    _change_django(world)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    world.after, world.label = world.current(), out.manifest["details"]["migrations"]["backup"]
    return world


def rollback(world, **kwargs):
    return world.invoke("rollback", flows.rollback, mode="rollback", release=None, **kwargs)


def unchanged(world, backups: int) -> bool:
    db = world.docker.database
    return (world.current() == world.after and db.restores == [] and len(db.backups) == backups
            and WRITERS | {"postgres"} <= set(world.docker.containers) and not world.lock_held())


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_restore_lists_what_is_lost_then_puts_the_backup_before_the_migrations_back_under_the_old_release(migrated,
                                                                                                           monkeypatch):
    db = migrated.docker.database
    db.writes = {"public.notes_note": [5, 1, 0], "public.django_session": [2, 0, 0]}   # written since the backup
    asked: list[str] = []
    monkeypatch.setattr("sys.stdin", Tty(""))
    out = rollback(migrated, restore=True, ask=lambda prompt: asked.append(prompt) or "stackdeploy-1")
    assert out.exit_code == 0, out.message
    assert f"restoring backup {migrated.label} loses every write committed since it ended" in out.message
    assert "public.notes_note: 2 inserted, 1 updated, 0 deleted" in out.message
    assert "public.django_session: 2 inserted, 0 updated, 0 deleted" in out.message
    assert "stackdeploy-1" in asked[0] and f"put the database back to backup {migrated.label}" in asked[0]
    # The backup that undoes it first, the writers stopped, then the backup taken before the migration.
    names = out.step_names
    assert names.index("backup") < names.index("stop-writers") < names.index("restore") < names.index("up")
    undo = db.backups[-1]["label"]
    assert db.restores == [["--log-level-console=info", "--delta", f"--set={migrated.label}", "--type=immediate",
                            "--target-action=promote", "restore"]]
    assert f"`inv restore --backup {undo}` then `inv rollback --release {migrated.after}` undo this rollback" in out.message
    assert migrated.current() == migrated.before and WRITERS | {"postgres"} <= set(migrated.docker.containers)
    assert migrated.release_meta(migrated.after)["outcome"] == "rolled-back"
    record = out.manifest["details"]["rollback_schema"]
    assert record["restored"] == migrated.label and record["migrations"] == ["notes.0002_drop_body"]
    assert record["lost"]["rows"] == {"public.django_session": [2, 0, 0], "public.notes_note": [2, 1, 0]}
    assert not (migrated.base / "restore-pending.json").exists() and not migrated.lock_held()
    assert out.step("checks")["status"] != "failed"
    # The migration is no longer applied: a later rollback to this release is not refused for it.
    assert migrated.release_meta(migrated.after)["migrations"]["undone"].startswith("restored away by")
    migrated.docker.pending_migrations = []
    (migrated.stack / "api" / "app" / "main.py").write_text("# C\n")
    assert migrated.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    again = rollback(migrated)
    assert again.exit_code == 0, again.message
    assert migrated.current() == migrated.before


def test_without_the_typed_name_or_a_terminal_nothing_is_restored_or_switched(migrated, monkeypatch):
    backups = len(migrated.docker.database.backups)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    out = rollback(migrated, restore=True)
    assert out.exit_code == 2 and "no terminal to ask on" in out.message and "--yes" in out.message
    assert "loses every write committed since" in out.message          # listed before it asks
    assert unchanged(migrated, backups)


def test_a_migration_deployed_with_skip_backup_has_no_backup_to_restore_and_the_refusal_says_what_is_possible(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.docker.pending_migrations = ["notes.0002_drop_body"]
    _change_django(world)
    world.env_file.write_text(world.env_file.read_text() + "SKIP_BACKUP=true\n")
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    world.after = world.current()
    backups = len(world.docker.database.backups)
    out = rollback(world, restore=True, yes=True)
    assert out.exit_code == 2
    said = " ".join(out.message.split())
    assert "no backup was taken before the migrations of release" in said and "--skip-backup" in said
    assert "inv restore --to" in said and "inv rollback --keep-schema" in said and "nothing was changed" in said
    assert unchanged(world, backups)
    plain = rollback(world)
    assert plain.exit_code == 1 and "inv restore --to" in " ".join(plain.message.split())


def test_restore_with_no_migration_in_the_way_or_beside_keep_schema_is_refused_before_anything_changes(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    _change_django(world)
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    world.after = world.current()
    out = rollback(world, restore=True, yes=True)
    assert out.exit_code == 2 and "--restore has nothing to undo" in out.message and "`inv rollback` alone" in out.message
    assert unchanged(world, len(world.docker.database.backups))
    out = rollback(world, restore=True, keep_schema=True, yes=True)
    assert out.exit_code == 2 and "contradict each other" in out.message
    assert unchanged(world, len(world.docker.database.backups))
