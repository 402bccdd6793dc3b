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
    token = _release_env(world)["INTERNAL_API_TOKEN"]
    world.set_env(INTERNAL_API_TOKEN=secrets.token_urlsafe(48))
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.manifest["details"]["secrets_rotated"] == ["INTERNAL_API_TOKEN"]
    assert _release_env(world)["DJANGO_SECRET_KEY_FALLBACKS"] == first
    # the old token too: django still accepts it from the api it replaces before the api
    assert _release_env(world)["INTERNAL_API_TOKEN_FALLBACKS"] == token and token not in _everything_written(out)
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
    assert "set in the running PostgreSQL, nothing restarts" in out.message
    assert "the running Redis accepts both" in out.message
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


def _live_password_changes(world, since: int) -> list[tuple[str, str]]:
    """The live password changes among docker calls ``since`` on, in order: ("postgres", "keep
    the other login" | "retire the other login") or ("redis", "add" | "only"), with what came
    between them ("up": the cutover's compose up)."""
    out = []
    for argv in world.docker.calls[since:]:
        text = " ".join(argv)
        if argv[:2] == ["docker", "exec"] and "app-role.sh" in text:
            out.append(("postgres", "keep" if "APP_ROLE_KEEP_OTHER=1" in argv else "retire"))
        elif argv[:2] == ["docker", "exec"] and "ACL SETUSER" in text:
            out.append(("redis", "add"))
        elif argv[:2] == ["docker", "exec"] and "CONFIG SET requirepass" in text:
            out.append(("redis", "only"))
        elif argv[1:2] == ["compose"] and "up" in argv and (not out or out[-1] != ("up", "")):
            out.append(("up", ""))
    return out


def _files_read(world, marker: str) -> list[str]:
    """The release whose password file each live change with ``marker`` in its command read."""
    import re
    return [re.search(r"releases/([^/]+)/\.secrets/(?:postgres|redis)", c).group(1)
            for d in world.droplets for c in d.commands if marker in c and "docker exec" in c]


def _change_api(world) -> None:
    main = world.stack / "api" / "app" / "main.py"
    main.write_text(main.read_text() + f"\n# {secrets.token_hex(4)}\n")


def test_rotated_passwords_are_taken_live_around_the_cutover_and_the_servers_keep_running(world):
    """The new passwords are accepted beside the old ones before any new container starts, and
    the old ones retired after the cutover; PostgreSQL and Redis are not recreated; the app's
    login flips to its alternate, and back on the next rotation."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    servers = {n: world.docker.containers[n].id for n in ("postgres", "redis")}
    assert _release_env(world)["POSTGRES_APP_LOGIN"] == "stack_app"
    since = len(world.docker.calls)
    world.set_env(POSTGRES_PASSWORD=secrets.token_urlsafe(32), POSTGRES_APP_PASSWORD=secrets.token_urlsafe(32),
                  REDIS_PASSWORD=secrets.token_urlsafe(32))
    _change_api(world)   # the fake compose does not interpolate: a new image makes the cutover visible
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    new = world.current()
    assert _live_password_changes(world, since) == [("postgres", "keep"), ("redis", "add"), ("up", ""),
                                                    ("postgres", "retire"), ("redis", "only")]
    # The old containers are gone before the old passwords are retired (their new connections
    # would be refused): this go-live does not leave them draining beside verify.
    calls = [" ".join(argv) for argv in world.docker.calls[since:]]
    stops = [i for i, c in enumerate(calls) if c.startswith("docker stop")]
    retired = next(i for i, c in enumerate(calls) if "app-role.sh" in c and "APP_ROLE_KEEP_OTHER=1" not in c)
    assert stops and max(stops) < retired and "drained" not in out.manifest["details"]
    assert _files_read(world, "app-role.sh") == [new, new]
    assert _files_read(world, "ACL SETUSER") == [live]          # authenticated with the live password
    assert {n: world.docker.containers[n].id for n in servers} == servers
    assert _release_env(world)["POSTGRES_APP_LOGIN"] == "stack_app_alt"
    assert out.manifest["details"]["secrets_live"] == {"postgres": True, "redis": True}
    files = world.base / "releases" / new / ".secrets"
    assert (files / "postgres" / "passwords").read_text().splitlines()[1] == "stack_app_alt"
    assert oct((files).stat().st_mode & 0o777) == "0o700"
    assert "release-drift.txt" not in out.files or ".secrets" not in (out.run.folder / "release-drift.txt").read_text()

    # the next rotation of the app password goes back to the app role itself; a deploy of
    # anything else changes no password live
    world.set_env(POSTGRES_APP_PASSWORD=secrets.token_urlsafe(32))
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    assert _release_env(world)["POSTGRES_APP_LOGIN"] == "stack_app"
    since = len(world.docker.calls)
    world.set_env(INTERNAL_API_TOKEN=secrets.token_urlsafe(48))
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0 and _live_password_changes(world, since) in ([], [("up", "")])
    assert "secrets_live" not in out.manifest["details"]


def test_a_failed_cutover_puts_the_live_release_passwords_back(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    since = len(world.docker.calls)
    world.docker.unhealthy = {"api"}
    _change_api(world)
    world.set_env(POSTGRES_APP_PASSWORD=secrets.token_urlsafe(32), REDIS_PASSWORD=secrets.token_urlsafe(32))
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code != 0 and world.current() == live
    changes = _live_password_changes(world, since)
    assert changes[:3] == [("postgres", "keep"), ("redis", "add"), ("up", "")]
    assert changes[-2:] == [("postgres", "retire"), ("redis", "only")]
    assert _files_read(world, "app-role.sh")[-1] == live and _files_read(world, "CONFIG SET")[-1] == live


def test_a_rollback_after_a_rotation_takes_the_older_passwords_back_live(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    first = world.current()
    world.set_env(POSTGRES_APP_PASSWORD=secrets.token_urlsafe(32))
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    since = len(world.docker.calls)
    out = world.invoke("rollback", flows.rollback, mode="rollback", release=None)
    assert out.exit_code == 0, out.message
    assert world.current() == first and _release_env(world)["POSTGRES_APP_LOGIN"] == "stack_app"
    assert [c for c in _live_password_changes(world, since) if c[0] == "postgres"] == [("postgres", "keep"),
                                                                                         ("postgres", "retire")]
    assert _files_read(world, "app-role.sh")[-2:] == [first, first]


def test_a_first_half_stopped_part_way_takes_back_what_it_added(world):
    """Redis refuses the new password after PostgreSQL took its own: the deploy stops before the
    cutover, and PostgreSQL is given the live release's passwords alone again."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    since = len(world.docker.calls)
    ran = world.docker.answer
    world.docker.answer = lambda argv: (1, "") if "ACL SETUSER" in " ".join(argv) else ran(argv)
    _change_api(world)
    world.set_env(POSTGRES_APP_PASSWORD=secrets.token_urlsafe(32), REDIS_PASSWORD=secrets.token_urlsafe(32))
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code != 0 and world.current() == live
    assert "Redis: the new password beside the old one" in out.message
    assert _live_password_changes(world, since)[:4] == [("postgres", "keep"), ("redis", "add"),
                                                        ("postgres", "retire"), ("redis", "only")]
    assert _files_read(world, "app-role.sh")[-1] == live
    assert "secrets_live" not in out.manifest["details"]


def test_a_rotation_interrupted_in_the_cutover_serves_on_with_the_live_passwords_and_a_retry_finishes(world,
                                                                                                      monkeypatch):
    """Ctrl-C while the clients are being replaced: the live release serves on with its own
    passwords (put back in the running servers), and the same deploy run again rotates them."""
    from tests.flows.faults import Trap, track_steps
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    _change_api(world)
    world.set_env(POSTGRES_APP_PASSWORD=secrets.token_urlsafe(32), REDIS_PASSWORD=secrets.token_urlsafe(32))
    since = len(world.docker.calls)
    trap = Trap("up", "ctrl-c", track_steps(monkeypatch)).install(world)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert trap.fired_at and out.exit_code == 130 and world.current() == live, out.message
    changes = _live_password_changes(world, since)
    assert changes[:2] == [("postgres", "keep"), ("redis", "add")] and changes[-2:] == [("postgres", "retire"),
                                                                                          ("redis", "only")]
    assert _files_read(world, "app-role.sh")[-1] == live and _files_read(world, "CONFIG SET")[-1] == live
    assert _release_env(world)["POSTGRES_APP_LOGIN"] == "stack_app"
    world.fault = None
    again = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert again.exit_code == 0, again.message
    assert again.manifest["details"]["secrets_live"] == {"postgres": True, "redis": True}
    assert _release_env(world)["POSTGRES_APP_LOGIN"] == "stack_app_alt"
    assert _files_read(world, "app-role.sh")[-1] == world.current() != live
