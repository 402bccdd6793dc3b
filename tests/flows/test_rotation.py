"""Secrets changed in .env between deploys (deploy/rotation.py through `inv deploy`): each
changed one is named in the run, never its value; a rotated DJANGO_SECRET_KEY leaves the old
key as the new release's fallback for one rotation."""
from __future__ import annotations

import secrets

from deploy import flows


def _release_env(world) -> dict[str, str]:
    from deploy.rotation import parse
    return parse((world.base / "current" / ".env").read_text())


def _everything_written(out) -> str:
    return "\n".join(p.read_text(errors="replace") for p in out.run.folder.rglob("*") if p.is_file()) + out.message


def test_a_rotated_django_key_stays_a_fallback_for_one_rotation_and_no_value_is_written(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    first = _release_env(world)["DJANGO_SECRET_KEY"]
    assert _release_env(world)["DJANGO_SECRET_KEY_FALLBACKS"] == ""
    second = secrets.token_urlsafe(48)
    world.set_env(DJANGO_SECRET_KEY=second)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    env = _release_env(world)
    assert env["DJANGO_SECRET_KEY"] == second and env["DJANGO_SECRET_KEY_FALLBACKS"] == first
    assert out.manifest["details"]["secrets_rotated"] == ["DJANGO_SECRET_KEY"]
    assert "secrets changed since the live release: DJANGO_SECRET_KEY (django starts with it" in out.message
    written = _everything_written(out)
    assert first not in written and second not in written

    # a deploy that rotates nothing keeps the fallback; the next rotation replaces it
    world.set_env(INTERNAL_API_TOKEN=secrets.token_urlsafe(48))
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.manifest["details"]["secrets_rotated"] == ["INTERNAL_API_TOKEN"]
    assert _release_env(world)["DJANGO_SECRET_KEY_FALLBACKS"] == first
    third = secrets.token_urlsafe(48)
    world.set_env(DJANGO_SECRET_KEY=third)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    assert _release_env(world)["DJANGO_SECRET_KEY_FALLBACKS"] == second
    assert first not in _everything_written(out) and second not in _everything_written(out)


def test_database_and_redis_passwords_changed_are_named_and_a_plain_deploy_names_none(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert "secrets_rotated" not in out.manifest["details"]
    world.set_env(POSTGRES_PASSWORD=secrets.token_urlsafe(32), POSTGRES_APP_PASSWORD=secrets.token_urlsafe(32),
                  REDIS_PASSWORD=secrets.token_urlsafe(32))
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    assert out.manifest["details"]["secrets_rotated"] == ["POSTGRES_APP_PASSWORD", "POSTGRES_PASSWORD", "REDIS_PASSWORD"]
    assert "PostgreSQL restarts with it" in out.message and "Redis restarts with it" in out.message
    assert _release_env(world)["REDIS_PASSWORD"] in world.env_file.read_text()   # the new values went live


def _migration_env_files(world) -> list[str]:
    """The --env-file of each migration one-off (`compose run ... migrate`), in order."""
    return [argv[argv.index("--env-file") + 1] for argv in world.docker.calls
            if "run" in argv and "migrate" in argv and "--env-file" in argv]


def test_a_database_password_rotated_with_new_migrations_migrates_with_the_live_env_then_rotates(world):
    from tests.flows.test_flows import _change_django
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    world.docker.pending_migrations = ["notes.0002_note_tags"]
    _change_django(world)
    world.set_env(POSTGRES_APP_PASSWORD=secrets.token_urlsafe(32))
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    assert world.docker.migrations and world.docker.pending_migrations == []
    # PostgreSQL still has the live release's password while the migration runs
    assert set(_migration_env_files(world)) == {str(world.base / "releases" / live / ".env")}
    # without a rotation, a migration runs with its own release's env
    world.docker.calls.clear()
    world.docker.pending_migrations = ["notes.0003_more"]
    _change_django(world, "again")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    release = out.manifest["details"]["push"]["release_id"]
    assert set(_migration_env_files(world)) == {str(world.base / "releases" / release / ".env")}
