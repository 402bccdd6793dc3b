"""A release whose migration fails halfway (Django commits each migration on its own, so those
before the failing one stay applied): the deploy unapplies them, so the database is as the live
release left it, says so, and does not switch; on one droplet and on a swarm alike."""
from __future__ import annotations

import pytest

from deploy import flows
from tests.flows.fake_swarm import FakeSwarm, docr, use_swarm  # noqa: F401 - docr is a fixture
from tests.flows.test_flows import _change_django


def _said(out) -> str:
    """What the operator read, its lines joined (the console wraps long ones)."""
    return " ".join(out.message.split())


def _failing_halfway(world):
    world.docker.pending_migrations = ["notes.0002_note_tags", "notes.0003_broken"]
    world.docker.failing_migration = "notes.0003_broken"
    _change_django(world, "with a broken migration")
    return world.invoke("deploy", flows.deploy, mode="update", update_only=True)


def test_a_migration_failing_halfway_is_undone_and_the_release_not_switched(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    out = _failing_halfway(world)
    assert out.exit_code != 0 and world.current() == live
    assert world.docker.applied_migrations == ["notes.0001_initial"]
    assert ("notes.0002_note_tags, applied before the failure, unapplied (back to notes 0001_initial): the "
            "database is as before") in _said(out)
    assert f"still serving release {live}" in _said(out)
    assert out.manifest["details"]["migrations_undone"] == ["notes.0002_note_tags"]
    assert ["--rm", "--no-deps", "-T", "django", "python", "manage.py", "migrate", "notes", "0001_initial",
            "--noinput"] in world.docker.migrations
    assert "switch" not in out.step_names or out.step("switch")["status"] != "ok"


def test_when_the_first_migration_fails_nothing_is_unapplied(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.docker.pending_migrations = ["notes.0002_broken"]
    world.docker.failing_migration = "notes.0002_broken"
    _change_django(world, "broken at once")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code != 0 and "the failing one was rolled back): the database is as before" in _said(out)
    assert not [m for m in world.docker.migrations if "notes" in m]      # no unapply was sent
    assert out.manifest["details"]["migrations_undone"] == []


@pytest.fixture
def swarm(world, docr) -> FakeSwarm:
    world.cloud.exists = False      # a new cluster: every node is created
    return use_swarm(world, docr, nodes=3)


def test_on_the_swarm_too(world, swarm):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    out = _failing_halfway(world)
    assert out.exit_code != 0 and world.current() == live
    assert world.docker.applied_migrations == ["notes.0001_initial"]
    assert "unapplied (back to notes 0001_initial): the database is as before" in _said(out)
