"""`inv rollback --unapply` against the fake edges, one droplet and a swarm: a rollback across
migrations Django can take back without losing a row unapplies them with the live release, then
puts the older release live; where one would lose data, it is refused and nothing changes."""
from __future__ import annotations

import pytest

from deploy import flows
from tests.flows.fake_swarm import docr, use_swarm  # noqa: F401 - docr is a fixture
from tests.flows.test_flows import _change_django

LOSSY = "drops notes_note.priority, which holds 3 value(s) written since"


def _migrated(world, migrations: list[str]):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.before = world.current()
    world.docker.pending_migrations = list(migrations)
    _change_django(world)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    world.after = world.current()
    return world


@pytest.fixture
def migrated(world):
    """Release A live, then release B, which added an index and a nullable column."""
    return _migrated(world, ["notes.0002_text_index", "notes.0003_priority"])


def rollback(world, **kwargs):
    return world.invoke("rollback", flows.rollback, mode="rollback", release=None, **kwargs)


def said(out) -> str:
    """What the console showed, its wrapped lines joined."""
    return " ".join(out.message.replace("│", " ").split())


def unchanged(world) -> bool:
    return (world.current() == world.after and not world.lock_held()
            and world.docker.applied_migrations == ["notes.0001_initial", "notes.0002_text_index", "notes.0003_priority"])


def test_a_refused_rollback_offers_to_unapply_migrations_that_lose_nothing(migrated):
    out = rollback(migrated)
    assert out.exit_code == 1 and "expects an older schema" in said(out)
    assert ("Django can take them back without losing a row: `inv rollback --unapply` unapplies them" in said(out))
    assert unchanged(migrated)


def test_unapply_takes_the_migrations_back_with_the_live_release_then_puts_the_older_release_live(migrated):
    out = rollback(migrated, unapply=True)
    assert out.exit_code == 0, out.message
    assert migrated.current() == migrated.before
    assert migrated.docker.applied_migrations == ["notes.0001_initial"]
    names = out.step_names
    assert names.index("choose-release") < names.index("unapply") < names.index("up")
    assert out.step("unapply")["message"] == ("unapplied notes.0002_text_index, notes.0003_priority "
                                             "(back to notes 0001_initial)")
    assert out.manifest["details"]["rollback_schema"] == {
        "unapplied": ["notes.0002_text_index", "notes.0003_priority"], "to": [["notes", "0001_initial"]]}
    # one `migrate notes 0001_initial`, nothing restored
    assert [m[-3:] for m in migrated.docker.migrations if "notes" in m] == [["notes", "0001_initial", "--noinput"]]
    assert migrated.docker.database.restores == []


def test_unapply_is_refused_naming_the_migration_that_would_lose_data_and_nothing_changes(migrated):
    migrated.docker.migration_losses = {"notes.0003_priority": [LOSSY]}
    out = rollback(migrated, unapply=True)
    assert out.exit_code == 1
    assert f"--unapply would lose data or cannot be done: notes.0003_priority {LOSSY}; nothing changed" in said(out)
    assert "--restore" in said(out) and "--keep-schema" in said(out)
    assert unchanged(migrated)
    # and the plain refusal says why --unapply is not offered
    out = rollback(migrated)
    assert out.exit_code == 1 and f"Not --unapply: notes.0003_priority {LOSSY}" in said(out)
    assert "`inv rollback --unapply` unapplies" not in said(out)


def test_an_irreversible_migration_is_not_unapplied(migrated):
    migrated.docker.migration_losses = {"notes.0002_text_index": ["irreversible: Raw Python operation"]}
    out = rollback(migrated, unapply=True)
    assert out.exit_code == 1 and "notes.0002_text_index irreversible: Raw Python operation" in said(out)
    assert unchanged(migrated)


def test_unapply_beside_another_way_or_with_nothing_in_the_way_is_refused_before_anything_changes(migrated):
    out = rollback(migrated, unapply=True, restore=True)
    assert out.exit_code != 0 and "--restore and --unapply contradict each other" in said(out)
    assert unchanged(migrated)
    assert rollback(migrated, unapply=True).exit_code == 0
    migrated.docker.pending_migrations = []          # a release without those migrations
    (migrated.stack / "api" / "app" / "main.py").write_text("# v3\n")
    assert migrated.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    out = rollback(migrated, unapply=True)
    assert out.exit_code != 0 and "--unapply has nothing to undo" in said(out)


def test_on_a_swarm_unapply_runs_in_a_one_off_of_the_live_service_then_swarm_rolls_back(world, docr):
    world.cloud.exists = False
    use_swarm(world, docr, nodes=3)
    _migrated(world, ["notes.0002_text_index"])
    out = rollback(world, unapply=True)
    assert out.exit_code == 0, out.message
    assert world.current() == world.before and world.docker.applied_migrations == ["notes.0001_initial"]
    names = out.step_names
    assert names.index("unapply") < names.index("stack-up")
