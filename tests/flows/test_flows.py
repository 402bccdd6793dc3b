"""Every flow end to end against fake edges: the order of steps, what reaches the droplet, what the
operator is told, and that the lock is always released. No Docker, no sshd: the whole file runs
in seconds. The real sshd/Docker/lab tests cover the same modules against the real things."""
from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time

import pytest

from deploy import cloud, flows
from remote.layout import RELEASE_IMAGES, RELEASE_META
from remote.lock import LockHolder
from tests.flows.conftest import strong_stack_secrets
from tests.flows.fakes import Unreachable, gone_pid
from tests.flows.faults import pushed

FULL_STEPS = ["settings", "token-check", "provision", "connect", "bootstrap", "lock", "push", "build", "migrate",
              "switch", "up", "checks", "collect", "drift", "backup-checks"]
UPDATE_STEPS = ["settings", "token-check", "discover", "connect", "lock", "push", "build", "migrate", "switch",
                "up", "checks", "collect", "drift", "backup-checks"]
ALL_BUILT = ["api", "beat", "django", "flower", "frontend", "postgres", "traefik", "worker"]


def test_full_deploy_runs_every_step_in_order_and_leaves_the_release_live(world):
    world.cloud.exists = False
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 0, out.message
    assert out.step_names == FULL_STEPS
    assert [s["name"] for s in out.manifest["steps"] if s["status"] != "ok"] == ["migrate"]   # skipped: first release
    assert world.cloud.calls == ["check_token", "find_cluster", "provision"]   # token checked once; NODES unset: the count found
    pushed = out.manifest["details"]["push"]["release_id"]
    assert world.current() == pushed
    assert world.release_meta(pushed)["outcome"] == "success"
    assert pushed in out.step("lock")["message"]                    # the lock names the release pushed
    assert not world.lock_held()
    assert world.built() == [ALL_BUILT]
    env = world.base / "releases" / pushed / ".env"          # the release's own env snapshot
    assert env.stat().st_mode & 0o777 == 0o400 and "POSTGRES_PASSWORD=" in env.read_text()   # owner-only, read-only
    files = out.files
    assert {"remote/compose-ps.json", "remote/current-release.txt", "provision.json", "push.json"} <= files
    assert out.manifest["details"]["current_release"] == pushed
    assert all(d.closed for d in world.droplets)


def test_update_only_rebuilds_only_what_changed_and_keeps_the_rest_running(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    before = {n: c.id for n, c in world.docker.containers.items()}
    (world.stack / "api" / "app" / "main.py").write_text(
        (world.stack / "api" / "app" / "main.py").read_text() + "\n# v2\n")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    assert out.step_names == UPDATE_STEPS
    assert world.cloud.calls[-2:] == ["check_token", "find_cluster"]   # no provisioning
    assert world.built()[-1] == ["api"]
    after = {n: c.id for n, c in world.docker.containers.items()}
    assert [n for n in after if after[n] != before[n]] == ["api"]
    assert out.manifest["details"]["push"]["changed_count"] == 1


def test_update_only_with_no_change_builds_nothing(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0
    assert len(world.built()) == 1          # only the first deploy's build
    assert out.manifest["details"]["up"]["recreated"] == []


def test_run_json_profiles_the_remote_commands_of_each_step(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    rows = out.manifest["commands"]
    assert {r["step"] for r in rows} >= {"lock", "push", "up", "collect"}
    assert {r["step"] for r in rows} <= set(out.step_names) | {"-"}
    assert {r["host"] for r in rows} == {out.manifest["target"]["name"]} and all(r["count"] >= 1 for r in rows)
    assert [r["seconds"] for r in rows] == sorted((r["seconds"] for r in rows), reverse=True)


def test_a_changed_bind_mounted_file_recreates_only_its_service(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    traefik = world.docker.containers["traefik"].id
    static = world.stack / "traefik" / "traefik.yml"
    static.write_text(static.read_text() + "\n# tweak\n")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0
    assert world.docker.containers["traefik"].id != traefik
    assert out.manifest["details"]["up"]["recreated"] == ["traefik"]
    assert out.manifest["details"]["recreated_in_place"] == ["traefik"]
    assert "recreated in place, a brief interruption for what uses them: traefik" in out.message


def _live_edge(world) -> dict[str, str]:
    folder = world.base / "edge" / "traefik"
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_changed_routes_and_dashboard_users_go_live_without_restarting_traefik_and_a_rollback_puts_them_back(world):
    """Issue 22: Traefik's routes (dynamic.yml) and the dashboards' users are in the folder its
    file provider watches, outside every release: a change is a reload, not a recreate."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    first = _live_edge(world)
    assert first["dynamic.yml"] == (world.stack / "traefik" / "dynamic.yml").read_text()
    assert "flower-auth:" in first["auth.yml"] and "admin-auth:" in first["auth.yml"]
    new_user = strong_stack_secrets()["FLOWER_BASIC_AUTH"]
    traefik = world.docker.containers["traefik"].id
    dynamic = world.stack / "traefik" / "dynamic.yml"
    dynamic.write_text(dynamic.read_text() + "\n# tweak\n")
    world.set_env(FLOWER_BASIC_AUTH=new_user)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0
    assert world.docker.containers["traefik"].id == traefik
    assert "traefik" not in out.manifest["details"]["up"]["recreated"]
    second = _live_edge(world)
    assert second["dynamic.yml"].endswith("# tweak\n") and new_user in second["auth.yml"]
    assert out.manifest["details"]["edge_config"]["replaced"] == ["auth.yml", "dynamic.yml"]
    assert world.invoke("rollback", flows.rollback, mode="rollback", release=None).exit_code == 0
    assert world.docker.containers["traefik"].id == traefik
    assert _live_edge(world) == first


def test_a_failed_go_live_puts_the_live_releases_routes_and_users_back(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    first = _live_edge(world)
    world.set_env(FLOWER_BASIC_AUTH=strong_stack_secrets()["FLOWER_BASIC_AUTH"])
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    world.docker.unhealthy = {"api"}
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 1
    assert _live_edge(world) == first


def test_failed_build_changes_nothing_live_and_a_plain_retry_deploys_what_was_asked(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    old_api = world.docker.containers["api"].id
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    world.docker.fail_build = {"api"}               # e.g. a network fault during pip install
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 1
    data = out.manifest
    assert data["outcome"] == "failed" and "service api: image build failed" in data["error"]
    assert f"still serving release {live}" in data["error"] and "fix: read compose-build.txt" in data["error"]
    assert out.step("build")["status"] == "failed" and "switch" not in out.step_names
    assert world.current() == live                  # nothing was switched
    assert world.docker.containers["api"].id == old_api
    assert "remote/diagnostics/compose-build.txt" in out.files
    assert "collect" in out.step_names              # remote state collected after the failure
    assert not world.lock_held()
    assert world.release_meta(data["details"]["push"]["release_id"])["outcome"] == "failed"

    world.docker.fail_build = set()                 # the fault is gone; the operator just reruns
    retry = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert retry.exit_code == 0, retry.message
    new = retry.manifest["details"]["push"]["release_id"]
    assert world.current() == new and world.built()[-1] == ["api"]
    api = world.docker.containers["api"]
    assert api.id != old_api and api.image == world.release_meta(new)["images"]["api"]["id"]


def test_an_unhealthy_release_is_switched_back_and_the_run_says_what_serves(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    (world.stack / "api" / "app" / "main.py").write_text("# v2, crashes at start\n")
    world.docker.unhealthy = {"api"}
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 1
    assert f"still serving release {live}" in out.manifest["error"]
    assert world.current() == live and out.manifest["details"]["live_release"] == live
    failed = out.manifest["details"]["push"]["release_id"]
    assert world.release_meta(failed)["outcome"] == "failed"
    assert world.docker.containers["api"].image == world.release_meta(live)["images"]["api"]["id"]


def test_a_full_deploy_without_changes_recreates_nothing(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    before = {n: c.id for n, c in world.docker.containers.items()}
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 0
    assert world.built()[-1] == ALL_BUILT               # a full deploy builds everything...
    assert {n: c.id for n, c in world.docker.containers.items()} == before   # ...and identical images run on
    assert out.manifest["details"]["build"]["new_images"] == []


def test_verify_with_droplet_unreachable_over_ssh_is_partial_with_checks(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.connector = Unreachable()
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 4
    data = out.manifest
    assert data["outcome"] == "partial"
    assert out.step("checks")["status"] == "ok" and out.step("collect")["status"] == "skipped"
    assert any(s["what"] == "remote collection" and "SSH_KEY_PATH" in s["why"] for s in data["skipped"])
    assert not any(f.startswith("remote/") for f in out.files)


def test_verify_over_ssh_collects_without_taking_the_lock(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 0, out.message
    assert out.step_names == ["settings", "token-check", "discover", "checks", "connect", "collect", "drift",
                              "backup-checks"]
    assert "remote/compose-ps.json" in out.files
    # every service's environment, read in one command, each in its own file, redacted
    services = {s["service"] for s in out.manifest["details"]["services"]}
    assert {f"remote/env/{s}.txt" for s in services - {"traefik"}} | {"remote/traefik-env.txt"} <= set(out.files)
    env = (out.run.folder / "remote" / "env" / "postgres.txt").read_text()
    assert "POSTGRES_PASSWORD=" in env and "from-container" not in env
    assert sum(" inspect " in c and ".Config.Env" in c for d in world.droplets for c in d.commands) == 2  # deploy, verify


def test_a_failed_read_of_the_environments_is_written_in_their_place_and_the_rest_is_collected(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0

    def lost(edge: str, detail: str) -> None:
        if edge == "run" and ".Config.Env" in detail:
            raise RuntimeError("Error response from daemon: the engine is restarting")
    world.fault = lost
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 0, out.message
    assert out.step("collect")["status"] == "warning" and "env/api.txt" in out.step("collect")["message"]
    assert (out.run.folder / "remote" / "env" / "api.txt").read_text().startswith("# collection failed")
    assert "the engine is restarting" in (out.run.folder / "remote" / "traefik-env.txt").read_text()
    assert (out.run.folder / "remote" / "compose-ps.json").read_text().startswith("[")


def test_a_failed_read_of_the_containers_is_written_in_place_of_both_listings_and_the_rest_is_collected(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0

    def lost(edge: str, detail: str) -> None:
        if edge == "run" and "com.docker.compose.oneoff=False" in detail and "section" not in detail:
            raise RuntimeError("Cannot connect to the Docker daemon")
    world.fault = lost
    out = world.invoke("verify", flows.verify_only, mode="verify")
    # Nothing was found not running because nothing was read: verify cannot pass on that.
    assert out.exit_code == 4 and out.manifest["outcome"] == "partial", out.message
    assert any("Cannot connect to the Docker daemon" in s["why"] and "inv verify" in s["why"]
               for s in out.manifest["skipped"] if "services" in s["what"])
    assert out.step("collect")["status"] == "warning"
    assert {"compose-ps.json", "compose-ps.txt"} <= set(out.step("collect")["message"].split(": ", 1)[1].split(", "))
    folder = out.run.folder / "remote"
    assert "Cannot connect to the Docker daemon" in (folder / "compose-ps.json").read_text()
    assert (folder / "compose-ps.txt").read_text().startswith("# collection failed")
    assert (folder / "docker-df.txt").is_file() and (folder / "current-release.txt").is_file()


def test_verify_fails_naming_a_stopped_service_and_inv_up(world):
    """Checks from outside do not see every service (beat, the worker): a stopped one must
    still fail verify, by name, with the command that starts it again."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.docker.containers["beat"].state = "exited"
    world.docker.containers["redis"].health = "unhealthy"
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 1 and out.manifest["outcome"] == "failed"
    assert "beat (exited)" in out.message and "redis (unhealthy)" in out.message
    assert "inv up" in out.message
    assert "remote/compose-ps.json" in out.files


def test_verify_without_a_token_or_droplet_ip_is_partial_and_says_why(world):
    world.set_env(DIGITALOCEAN_TOKEN=None)
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 4
    assert out.step("token-check")["status"] == "failed"
    assert "DIGITALOCEAN_TOKEN" in out.step("token-check")["message"]
    assert [s["status"] for s in out.manifest["steps"] if s["name"] in ("checks", "collect")] == ["skipped"] * 2
    assert world.checks.calls == []


def test_invalid_droplet_ip_is_a_config_error_naming_the_setting(world):
    world.set_env(DROPLET_IP="not-an-ip")
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 2
    assert out.manifest["outcome"] == "config-error"
    assert out.manifest["error"].startswith("DROPLET_IP is 'not-an-ip', which is not an IP address")
    assert world.cloud.calls == [] and world.checks.calls == []


def test_logs_dir_from_the_env_file_decides_where_the_run_folder_goes(world):
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.run.folder.parent == world.logs


def test_a_held_lock_stops_the_deploy_and_stays_with_its_holder(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    (world.base / "lock").mkdir()
    holder = LockHolder(who="alice@laptop", when="2026-11-26T10:00:00+00:00", release="r-alice",
                        command="inv deploy", pid=1)
    (world.base / "lock" / "holder.json").write_text(json.dumps(holder.__dict__))
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 5
    assert "held by alice@laptop" in out.manifest["error"] and "inv lock.release" in out.manifest["error"]
    assert "push" not in out.step_names
    assert json.loads((world.base / "lock" / "holder.json").read_text())["who"] == "alice@laptop"
    assert not list(world.base.glob(".lock-*"))    # the refused attempt left no staging folder


def test_lock_status_and_release(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    (world.base / "lock").mkdir()
    out = world.invoke("lock-status", flows.lock_status, mode="lock")
    assert out.exit_code == 0 and "held by" in out.message
    out = world.invoke("lock-release", flows.lock_release, mode="lock")
    assert out.exit_code == 0 and not world.lock_held()
    assert "deploy lock: free" in world.invoke("lock-status", flows.lock_status, mode="lock").message


def test_rollback_starts_the_previous_release_with_its_images_and_env_without_rebuilding(world):
    world.set_env(RATE_LIMIT_API_RPM="60")
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    first = world.current()
    first_api = world.release_meta(first)["images"]["api"]["id"]
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    world.set_env(RATE_LIMIT_API_RPM="90")              # an env change ships with the release
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    second = world.current()
    builds = len(world.built())
    out = world.invoke("rollback", flows.rollback, mode="rollback", release=None)
    assert out.exit_code == 0, out.message
    assert world.current() == first
    assert len(world.built()) == builds                  # no rebuild
    assert world.docker.containers["api"].image == first_api
    assert "RATE_LIMIT_API_RPM='60'" in (world.base / "current" / ".env").read_text()
    assert world.release_meta(second)["outcome"] == "rolled-back"
    assert f"{second} -> {first}" in out.step("choose-release")["message"]
    assert not world.lock_held()
    listed = world.invoke("releases", flows.list_releases, mode="list")
    assert f"* {first}  success" in listed.message and f"  {second}  rolled-back" in listed.message
    assert "api=" in listed.message and " by " in listed.message


def test_rollback_returns_to_the_release_that_was_live_before_not_to_one_rolled_away_from(world):
    """A live, B deployed then rolled back (A live again), C deployed: `inv rollback` puts A back,
    the release C replaced, not B, which the operator rejected (it stays reachable by name)."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    a = world.current()
    (world.stack / "api" / "app" / "main.py").write_text("# B\n")
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    b = world.current()
    assert world.invoke("rollback", flows.rollback, mode="rollback", release=None).exit_code == 0
    (world.stack / "api" / "app" / "main.py").write_text("# C\n")
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    out = world.invoke("rollback", flows.rollback, mode="rollback", release=None)
    assert out.exit_code == 0, out.message
    assert world.current() == a
    assert world.invoke("rollback", flows.rollback, mode="rollback", release=b).exit_code == 0
    assert world.current() == b


def test_rollback_skips_releases_that_never_became_healthy(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    good = world.current()
    main = world.stack / "api" / "app" / "main.py"
    main.write_text("# v2, never healthy\n")
    world.docker.unhealthy = {"api"}
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 1
    bad = max(p.name for p in (world.base / "releases").iterdir())
    world.docker.unhealthy = set()
    main.write_text("# v3\n")
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    out = world.invoke("rollback", flows.rollback, mode="rollback", release=bad)
    assert out.exit_code == 1
    assert f"release {bad} never became healthy" in out.manifest["error"] and good in out.manifest["error"]
    out = world.invoke("rollback", flows.rollback, mode="rollback", release=None)
    assert out.exit_code == 0 and world.current() == good     # the failed one in between is skipped


def test_rollback_to_an_unknown_release_names_the_fix(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    out = world.invoke("rollback", flows.rollback, mode="rollback", release="20990101T000000000Z-deadbeef")
    assert out.exit_code == 1
    assert "does not exist" in out.manifest["error"] and "inv releases" in out.manifest["error"]
    assert not world.lock_held()


def test_update_only_without_a_droplet_says_run_a_full_deploy(world):
    world.cloud.exists = False
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 1
    assert "no droplet named" in out.manifest["error"] and "full `inv deploy`" in out.manifest["error"]
    assert world.droplets == []


def test_missing_stack_secret_stops_before_anything_is_created(world):
    world.set_env(POSTGRES_PASSWORD=None)
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 2
    assert "POSTGRES_PASSWORD" in out.manifest["error"]
    assert world.cloud.calls == ["check_token"]          # read-only: the token is checked first


def test_missing_token_fails_the_token_check_first(world):
    world.set_env(DIGITALOCEAN_TOKEN=None, POSTGRES_PASSWORD=None)
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 2
    assert out.step_names == ["settings", "token-check"] and "DIGITALOCEAN_TOKEN" in out.step("token-check")["message"]


def test_old_releases_are_pruned_only_after_a_healthy_release(world):
    world.set_env(RELEASES_KEEP="2")
    main = world.stack / "api" / "app" / "main.py"
    for n in range(3):
        main.write_text(f"# v{n}\n")
        assert world.invoke("deploy", flows.deploy, mode="update" if n else "full", update_only=bool(n)).exit_code == 0
    kept = sorted(p.name for p in (world.base / "releases").iterdir())
    assert len(kept) == 2                         # pruned down to RELEASES_KEEP after each success
    api_refs = {ref for ref in world.docker.images if ref.startswith("stack-api:")}
    assert api_refs == {world.release_meta(r)["images"]["api"]["ref"] for r in kept}   # old images went too
    # ...and after each healthy release, dangling images and old build cache (tagged release
    # images are never dangling: the kept releases' refs above survive it)
    prunes = [a[:3] for a in world.docker.calls if a[2:3] == ["prune"]]
    assert prunes == [["docker", "image", "prune"], ["docker", "builder", "prune"]] * 3
    assert ["docker", "builder", "prune", "--force", "--filter", "until=72h"] in world.docker.calls
    main.write_text("# v3, never healthy\n")
    world.docker.unhealthy = {"api"}
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 1 and "service api" in out.manifest["error"]
    after = sorted(p.name for p in (world.base / "releases").iterdir())
    assert set(kept) <= set(after)                # a failed release removes nothing to roll back to
    assert len([a for a in world.docker.calls if a[2:3] == ["prune"]]) == 6   # and prunes nothing


def test_changed_services_are_replaced_start_first_dependencies_first(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    old = {n: c.id for n, c in world.docker.containers.items()}
    world.docker.events.clear()
    for path in ("api/app/main.py", "django/config/settings.py"):
        (world.stack / path).write_text((world.stack / path).read_text() + "\n# next release\n")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    # django's image is shared by worker, flower and beat; the api calls django: django goes first
    assert out.manifest["details"]["up"]["replaced"] == ["django", "api", "flower", "worker"]
    events = world.docker.events
    for name in ("django", "api", "worker", "flower"):
        started = events.index(next(e for e in events if e[:2] == ("start", name)))
        assert events.index(("stop", name, old[name])) > started        # new one up before the old stops
    beat_stop = events.index(("stop", "beat", old["beat"]))
    assert beat_stop < events.index(next(e for e in events if e[:2] == ("start", "beat")))  # never two beats
    assert {n for _, n, _ in events} == {"django", "api", "worker", "flower", "beat"}       # nothing else touched
    assert out.manifest["details"]["recreated_in_place"] == ["beat"]


def _django_slow_to_answer(world) -> None:
    """Docker's record lags (as with a 10 s interval) and the next django answers its own
    healthcheck only on the fourth poll; each probe lands in world.docker.events."""
    world.docker.lagging_health = True
    world.docker.events.clear()
    django_probes = []

    def answer(argv):
        if argv[:1] == ["health"]:
            if argv[1] == "django":
                django_probes.append(argv)
            code = 1 if argv[1] == "django" and len(django_probes) < 4 else 0
            world.docker.events.append(("probe", argv[1], code))
            return code, ""
        return 0, ""

    world.docker.answer = answer


def test_the_cutover_waits_on_each_services_own_healthcheck_and_replaces_independent_ones_together(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    _django_slow_to_answer(world)
    for path in ("api/app/main.py", "django/config/settings.py"):
        (world.stack / path).write_text((world.stack / path).read_text() + "\n# next release\n")
    index = world.stack / "frontend" / "index.html"
    index.write_text(index.read_text() + "<!-- next -->\n")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    events = world.docker.events
    first = {name: events.index(next(e for e in events if e[:2] == ("start", name))) for name in ("django", "api", "frontend")}
    django_ready = events.index(("probe", "django", 0))
    assert first["api"] > django_ready               # the api calls django: it waits for the new one
    assert first["frontend"] < django_ready          # the front end does not wait for django
    assert world.docker.containers["api"].health == "starting"   # Docker has not checked it yet: the deployer did
    collected = {s["service"]: s for s in out.manifest["details"]["services"]}
    # verify takes the cutover's word for the containers it saw answer moments ago: no second probe
    assert collected["api"]["health"] == "healthy" and collected["api"]["probed"] == "cutover"
    assert [e for e in events if e[:2] == ("probe", "api")] == [("probe", "api", 0)]
    # `inv verify` alone has no cutover behind it: it asks the starting container itself
    events.clear()
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 0, out.message
    collected = {s["service"]: s for s in out.manifest["details"]["services"]}
    assert collected["api"]["health"] == "healthy" and collected["api"]["probed"] is True
    assert ("probe", "api", 0) in events


def test_a_rollback_starts_every_replacement_at_once_the_api_not_waiting_for_the_new_django(world):
    # The pair ran side by side during the update it undoes: its chain (django, then the api)
    # was the rollback's length (issue 23: a rollback is a switch).
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    for path in ("api/app/main.py", "django/config/settings.py"):
        (world.stack / path).write_text((world.stack / path).read_text() + "\n# next release\n")
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    _django_slow_to_answer(world)
    for droplet in world.droplets:
        droplet.commands.clear()
    out = world.invoke("rollback", flows.rollback, mode="rollback", release=None)
    assert out.exit_code == 0, out.message
    events = world.docker.events
    api_started = events.index(next(e for e in events if e[:2] == ("start", "api")))
    assert api_started < events.index(("probe", "django", 0))      # not after the new django is healthy
    assert {"api", "django"} <= set(out.manifest["details"]["up"]["replaced"])
    # The old containers are the ones the cutover read at its start: each service is listed once
    # more only to find its new container (on a busy engine each `docker ps` waits seconds).
    listed = [c for d in world.droplets for c in d.commands
              if c.startswith("docker ps -aq --no-trunc") and "com.docker.compose.service=api" in c]
    assert len(listed) == 1, listed


def _next_release(world) -> None:
    for path in ("api/app/main.py", "django/config/settings.py"):
        (world.stack / path).write_text((world.stack / path).read_text() + "\n# next release\n")


@pytest.mark.parametrize("task", ["update", "rollback"])
def test_the_old_containers_drain_while_verify_reads_the_new_ones(world, task):
    """Issue 23: a release is live once its new containers are healthy; the old ones finish what
    they serve while verify runs, instead of before it begins, and are gone when the run ends."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    _next_release(world)
    if task == "rollback":
        assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    order, collected = [], threading.Event()

    def gate(edge: str, detail: str) -> None:
        if edge == "run" and ".Config.Env" in detail:      # collect's second round
            order.append("collect")
            collected.set()
        elif edge == "run" and detail.startswith("docker stop"):
            collected.wait(10)
            order.append("stop")
    world.fault = gate
    out = (world.invoke("rollback", flows.rollback, mode="rollback", release=None) if task == "rollback"
           else world.invoke("deploy", flows.deploy, mode="update", update_only=True))
    assert out.exit_code == 0, out.message
    drained = out.manifest["details"]["drained"]
    assert {"api", "django"} <= set(drained) and order == ["collect"] + ["stop"] * len(drained), order
    assert not world.docker.extra          # every old container stopped and removed


def test_an_old_container_removed_between_the_listing_and_its_inspect_is_left_out_not_a_failed_read(world):
    """The old containers drain while verify reads the new ones: one removed after `docker ps`
    listed it and before `docker inspect` read it made the whole listing fail (lab, 2026-12-08:
    "Error: No such object"), and the run partial."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    _next_release(world)
    drained, listed_once = [], threading.Event()

    def drain_ends(ids: list[str]) -> None:   # the api's old container (started first) is removed
        apis = sorted((c for c in world.docker._all() if c.service == "api" and c.id in ids), key=lambda c: c.started)
        if len(apis) == 2 and not drained:
            drained.append(apis[0].id)
            world.docker.extra = {k: c for k, c in world.docker.extra.items() if c not in apis}
            world.docker.containers["api"] = apis[1]
            listed_once.set()

    def drains_wait(edge: str, detail: str) -> None:   # the other old containers drain after that listing
        if edge == "run" and detail.startswith("docker stop"):
            listed_once.wait(10)
    world.docker.before_listing, world.fault = drain_ends, drains_wait
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0 and out.manifest["outcome"] == "success", out.message
    assert drained and out.step("collect")["status"] == "ok"
    listed = json.loads((out.run.folder / "remote" / "compose-ps.json").read_text())
    assert {"api", "django", "postgres"} <= {c["service"] for c in listed} and drained[0] not in {c["id"] for c in listed}


def test_an_old_container_that_cannot_be_stopped_fails_verify_by_name(world):
    """It would keep serving the old release beside the new one: not a success."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    _next_release(world)
    old_api = world.docker.containers["api"].id

    def refuse(edge: str, detail: str) -> None:
        if edge == "run" and detail.startswith("docker stop") and old_api in detail:
            raise RuntimeError("Error response from daemon: cannot stop container: permission denied")
    world.fault = refuse
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 1, out.message
    assert "api (its old container could not be stopped" in out.message and "inv up" in out.message
    assert out.manifest["details"]["live_release"] == pushed(out)


def test_a_container_left_starting_by_an_earlier_run_is_awaited_by_its_own_healthcheck(world):
    """CI: a run cut short had recreated Traefik; the next cutover found it "starting" in Docker's
    record, not in its own plan, and failed it instead of waiting as `compose up --wait` would."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.docker.containers["traefik"].health = "starting"
    probes = []
    world.docker.answer = lambda argv: (probes.append(argv[1:]) or (0, "")) if argv[:1] == ["health"] else (0, "")
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    assert ["traefik"] in probes and out.manifest["details"]["up"]["replaced"] == ["api"]


def test_a_new_container_that_never_gets_healthy_is_removed_and_the_old_one_never_stopped(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    old_api = world.docker.containers["api"].id
    world.docker.events.clear()
    (world.stack / "api" / "app" / "main.py").write_text("# v2, crashes at start\n")
    world.docker.unhealthy = {"api"}
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 1
    assert "the new container did not become healthy" in out.manifest["error"]
    assert "the old one kept serving" in out.manifest["error"] and "still serving release" in out.manifest["error"]
    assert world.docker.containers["api"].id == old_api and not world.docker.extra
    assert ("stop", "api", old_api) not in world.docker.events
    assert "remote/diagnostics/logs-api-new.txt" in out.files


def _change_django(world, note: str = "next release") -> None:
    settings = world.stack / "django" / "config" / "settings.py"
    settings.write_text(settings.read_text() + f"\n# {note}\n")


def test_migrations_are_listed_first_and_applied_once_per_release_before_the_switch_after_a_backup(world):
    out = world.invoke("deploy", flows.deploy)
    assert out.step("migrate")["status"] == "skipped"            # first release: its start migrates
    assert world.docker.migrations == []
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.step("migrate")["status"] == "skipped"            # django's image is the live one: nothing new
    assert "no new migration" in out.step("migrate")["message"] and world.docker.migration_plans == []
    _change_django(world)                                         # a new image, no new migration
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.step("migrate")["message"] == "no migration to apply" and "backup" not in out.step_names
    assert len(world.docker.migration_plans) == 1 and world.docker.migrations == []
    world.docker.pending_migrations = ["notes.0002_note_tags", "notes.0003_drop_body"]
    _change_django(world, "with migrations")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    assert world.docker.migrations == [["--rm", "--no-deps", "-T", "django", "python", "manage.py", "migrate",
                                        "--noinput"]]
    names = out.step_names
    assert names.index("migrate") < names.index("backup") < names.index("switch")   # the backup is the migration's first act
    label = world.docker.database.backups[-1]["label"]
    assert out.step("migrate")["message"] == f"applied notes.0002_note_tags, notes.0003_drop_body after backup {label}"
    record = {"applied": ["notes.0002_note_tags", "notes.0003_drop_body"], "backup": label,
              "backup_end": out.manifest["details"]["backup"]["stopped"], "writes_at_backup": {"public.notes_note": [3, 0, 0]}}
    assert out.manifest["details"]["migrations"] == record
    assert world.release_meta(out.manifest["details"]["push"]["release_id"])["migrations"] == record
    listed = world.invoke("releases", flows.list_releases)
    assert f"migrated notes.0002_note_tags, notes.0003_drop_body after backup {label}" in listed.message


def test_a_rollback_across_applied_migrations_is_refused_naming_both_ways_on_unless_the_schema_is_kept(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    before = world.current()
    world.docker.pending_migrations = ["notes.0002_drop_body"]
    _change_django(world)
    migrated = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert migrated.exit_code == 0, migrated.message
    after, label = world.current(), migrated.manifest["details"]["migrations"]["backup"]
    containers = {n: c.id for n, c in world.docker.containers.items()}
    out = world.invoke("rollback", flows.rollback, mode="rollback", release=None)
    assert out.exit_code == 1
    said = " ".join(out.message.split())
    assert f"release {before} expects an older schema: 1 migration(s) applied since by {after} (notes.0002_drop_body)" in said
    assert "nothing changed" in said and "inv rollback --keep-schema" in said
    assert f"`inv rollback --restore` (puts the database back to backup {label}, taken before them" in said
    assert "which is lost, before it asks" in said
    assert world.current() == after and {n: c.id for n, c in world.docker.containers.items()} == containers
    assert not world.lock_held()
    out = world.invoke("rollback", flows.rollback, mode="rollback", release=None, keep_schema=True)
    assert out.exit_code == 0, out.message
    assert world.current() == before
    assert out.manifest["details"]["rollback_schema"] == {"kept": True, "migrations": ["notes.0002_drop_body"]}
    assert any("--keep-schema" in w for w in out.manifest["warnings"])


def test_a_backup_that_fails_before_migrating_stops_the_deploy_with_nothing_migrated(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    world.docker.pending_migrations = ["notes.0002_note_tags"]
    world.docker.database.problem = "unable to find a valid repository"
    _change_django(world)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 1
    assert "the backup before migrating failed, so nothing was migrated" in out.manifest["error"]
    assert f"release {live} still serves" in out.manifest["error"] and "--skip-backup" in out.message
    assert world.docker.migrations == [] and world.current() == live and not world.lock_held()


def test_a_release_that_cannot_list_its_migrations_is_not_switched_to_and_nothing_is_migrated(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    world.docker.plan_error = "django.db.utils.OperationalError: could not connect to server\n"
    _change_django(world)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 1
    assert "could not list the migrations to apply" in out.manifest["error"]
    assert f"still serving release {live}" in out.manifest["error"]
    assert "remote/diagnostics/migrate-plan.txt" in out.files and "migrate-plan.txt" in out.message
    assert world.docker.migrations == [] and world.current() == live and not world.lock_held()


def test_skip_backup_migrates_without_one_and_says_so(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.docker.pending_migrations = ["notes.0002_note_tags"]
    backups = len(world.docker.database.backups)
    world.env_file.write_text(world.env_file.read_text() + "SKIP_BACKUP=true\n")
    _change_django(world)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    assert "backup" not in out.step_names and len(world.docker.migrations) == 1
    assert len(world.docker.database.backups) == backups
    assert out.manifest["details"]["backup_before_migrate"] == {"skipped": True, "migrations": ["notes.0002_note_tags"]}
    assert any("without a backup first (--skip-backup)" in w for w in out.manifest["warnings"])
    assert "without a backup first" in (out.run.folder / "summary.md").read_text()


def test_ctrl_c_during_the_build_leaves_the_live_release_serving_and_recorded(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    world.docker.interrupt_at = "build"
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 130 and out.manifest["outcome"] == "interrupted"
    assert world.current() == live and out.manifest["details"]["live_release"] == live
    assert world.release_meta(out.manifest["details"]["push"]["release_id"])["outcome"] == "interrupted"
    assert not world.lock_held()


def test_ctrl_c_during_the_cutover_restores_the_live_release(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    old_api = world.docker.containers["api"]
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    world.docker.interrupt_at = "scale api"
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 130 and out.manifest["outcome"] == "interrupted"
    assert world.current() == live and out.manifest["details"]["live_release"] == live
    assert world.release_meta(out.manifest["details"]["push"]["release_id"])["outcome"] == "interrupted"
    assert world.docker.containers["api"].image == old_api.image and not world.docker.extra
    assert any("restoring release" in w for w in out.manifest["warnings"])
    assert not world.lock_held()


def test_a_file_changed_on_the_droplet_is_reported_and_repaired_by_the_next_deploy(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.base / "releases" / world.current()
    older = (live / "api" / "app" / "main.py").read_text()
    # another tool writes into the live release in place (the same inode as older releases)
    with open(live / "api" / "app" / "main.py", "a") as fh:
        fh.write("# patched by hand\n")
    (live / "stray.txt").write_text("left behind\n")
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.step("drift")["status"] == "warning"
    assert out.manifest["details"]["drift"] == {"release": world.current(), "changed": ["api/app/main.py"],
                                               "missing": [], "extra": ["stray.txt"]}
    assert "changed api/app/main.py" in (out.run.folder / "remote" / "release-drift.txt").read_text()

    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)    # no local change at all
    assert out.exit_code == 0 and out.step("push")["status"] == "warning"
    new = world.base / "releases" / world.current()
    assert (new / "api" / "app" / "main.py").read_text() == older and not (new / "stray.txt").exists()
    assert world.built()[-1] == ["api"]                # the api image is built from the repaired file
    assert world.invoke("verify", flows.verify_only, mode="verify").step("drift")["status"] == "ok"


OWN_FILES = {RELEASE_META, RELEASE_IMAGES}   # the deployer's records, replaced by renaming over them


def test_published_releases_are_read_only_so_an_in_place_write_cannot_reach_older_ones(world):
    """Releases share unchanged files' inodes (cp -al): a file writable in place in the live
    release would change every older one too, and a rollback would bring the change back."""
    def writable(release: str) -> list[str]:
        root = world.base / "releases" / release
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if p.is_file() and not p.is_symlink() and p.stat().st_mode & 0o222 and p.name not in OWN_FILES)

    assert world.invoke("deploy", flows.deploy).exit_code == 0
    first = world.current()
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    second = world.current()
    assert second != first
    # (the deployer's own records of a release are not its content: rewritten by renaming over them)
    assert writable(first) == [] and writable(second) == []
    assert (world.base / "releases" / second / ".env").stat().st_mode & 0o777 == 0o400
    assert world.invoke("rollback", flows.rollback, mode="rollback", release=None).exit_code == 0
    assert world.current() == first


def test_rollback_recreates_traefik_only_when_its_files_differ(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    traefik = world.docker.containers["traefik"].id
    assert world.invoke("rollback", flows.rollback, mode="rollback", release=None).exit_code == 0
    assert world.docker.containers["traefik"].id == traefik          # same Traefik files: left alone
    static = world.stack / "traefik" / "traefik.yml"
    static.write_text(static.read_text() + "\n# tweak\n")
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    traefik = world.docker.containers["traefik"].id
    assert world.invoke("rollback", flows.rollback, mode="rollback", release=None).exit_code == 0
    assert world.docker.containers["traefik"].id != traefik          # its config differs: recreated


def test_too_little_free_disk_stops_the_push_before_anything_is_uploaded(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    releases = sorted(p.name for p in (world.base / "releases").iterdir())
    world.set_env(MIN_FREE_MB=str(10 ** 9))          # the fake droplet's real `df` never has a petabyte free
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 1
    error = out.manifest["error"]
    assert "MB free" in error and str(world.base / "releases") in error and "MIN_FREE_MB" in error
    assert "docker system prune" in error
    assert out.step("push")["status"] == "failed" and "build" not in out.step_names
    assert sorted(p.name for p in (world.base / "releases").iterdir()) == releases   # nothing uploaded
    assert world.current() == live and not world.lock_held()


def _hold_lock(world, who: str, pid: int | None, age_s: float = 0) -> None:
    """A lock as another deploy leaves it: holder.json inside, taken ``age_s`` ago (droplet clock)."""
    folder = world.base / "lock"
    folder.mkdir()
    holder = LockHolder(who=who, when="2026-11-26T10:00:00+00:00", release="r-other", command="inv deploy",
                        pid=pid)
    (folder / "holder.json").write_text(json.dumps(holder.__dict__))
    then = time.time() - age_s
    os.utime(folder, (then, then))


def test_lock_release_if_stale_refuses_a_live_lock_and_names_its_holder(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    _hold_lock(world, "alice@laptop", pid=4242, age_s=60)     # another machine, a minute ago
    out = world.invoke("lock-release", flows.lock_release, mode="lock", if_stale=True)
    assert out.exit_code == 5
    error = out.manifest["error"]
    assert "held by alice@laptop" in error and "not stale" in error and "LOCK_TTL" in error
    assert world.lock_held()
    here = f"{getpass.getuser()}@{socket.gethostname()}"
    (world.base / "lock" / "holder.json").write_text(json.dumps(
        LockHolder(who=here, when="x", release=None, command="inv deploy", pid=os.getpid()).__dict__))
    os.utime(world.base / "lock", (time.time() - 86400, time.time() - 86400))   # old, but its process lives
    assert world.invoke("lock-release", flows.lock_release, mode="lock", if_stale=True).exit_code == 5
    assert world.lock_held()


def test_lock_release_if_stale_releases_a_lock_whose_process_is_gone(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    pid = gone_pid()
    _hold_lock(world, f"{getpass.getuser()}@{socket.gethostname()}", pid=pid)
    held = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert held.exit_code == 5
    assert f"process {pid} on this machine" in held.manifest["error"] and "--if-stale" in held.manifest["error"]
    out = world.invoke("lock-release", flows.lock_release, mode="lock", if_stale=True)
    assert out.exit_code == 0, out.message
    assert not world.lock_held() and f"process {pid}" in out.message
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0


def test_lock_release_if_stale_releases_a_lock_older_than_lock_ttl(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    _hold_lock(world, "alice@laptop", pid=4242, age_s=5 * 3600)
    world.set_env(LOCK_TTL=str(6 * 3600))
    assert world.invoke("lock-release", flows.lock_release, mode="lock", if_stale=True).exit_code == 5
    assert "taken 5 h" in world.invoke("lock-status", flows.lock_status, mode="lock").message
    world.set_env(LOCK_TTL=None)                      # the default, a few hours
    out = world.invoke("lock-release", flows.lock_release, mode="lock", if_stale=True)
    assert out.exit_code == 0, out.message
    assert not world.lock_held() and "LOCK_TTL" in out.message


def test_a_provision_that_fails_after_creating_the_droplet_still_names_it_in_run_json(world):
    world.cloud.exists = False
    world.cloud.fail_after_droplet = cloud.CloudUnavailable("the DigitalOcean API kept failing while creating "
                                                            "the firewall", "wait a few minutes and run again")
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 1
    assert out.manifest["target"] == {"name": "stackdeploy-1", "region": "fra1", "ip": None, "droplet_id": 42}
    assert out.step("provision")["status"] == "failed"


# --- issue 11: a brand-new droplet is still running cloud-init when SSH first answers ---------

def _ci_running(stage: str) -> str:
    return 'state: running\n{"v1": {"stage": "%s", "init": {"errors": []}}}' % stage


def test_a_first_deploy_waits_for_cloud_init_then_succeeds_without_a_rerun(world):
    world.cloud.exists = False
    world.cloud_init = [_ci_running("modules-config"), _ci_running("modules-final"),
                        'state: done\n{"v1": {"errors": []}}']
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 0, out.message
    assert "cloud-init done" in out.step("bootstrap")["message"]
    log = (out.run.folder / "run.log").read_text()
    assert "cloud-init: modules-config" in log and "cloud-init: modules-final" in log


def test_cloud_init_errors_stop_the_deploy_with_its_own_words_and_the_fix(world):
    world.cloud.exists = False
    world.cloud_init = ['state: done\n{"v1": {"errors": ["(\'package-update-upgrade-install\', '
                        'ProcessExecutionError(\'apt-get install docker.io failed\'))"]}}']
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code != 0
    assert out.step("bootstrap")["status"] == "failed"
    assert "package-update-upgrade-install" in out.message and "apt-get install docker.io" in out.message
    assert "destroy the droplet" in out.message and "cloud-init.log" in out.message
    assert out.step_names[-1] == "bootstrap"          # nothing was pushed to a half-made droplet


def test_a_new_droplet_is_pinned_before_the_first_connection_and_its_key_kept_secret(world):
    world.cloud.exists = False
    known_hosts = world.tmp / "known_hosts"
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 0, out.message
    ip = out.manifest["target"]["ip"]
    [line] = known_hosts.read_text().splitlines()
    assert line.startswith(f"{ip} ssh-ed25519 ")
    kept = known_hosts.parent / "host_keys" / f"{out.manifest['target']['name']}_ed25519"
    assert kept.stat().st_mode & 0o777 == 0o600 and known_hosts.stat().st_mode & 0o777 == 0o600
    assert kept.with_name(kept.name + ".pub").read_text().split()[1] == line.split()[2]
    body = kept.read_text().splitlines()[1]          # a line of the private key
    for f in out.run.folder.rglob("*"):
        if f.is_file():
            assert body not in f.read_text(errors="replace"), f"private host key in {f}"
    assert not list(kept.parent.glob("*.pending"))


def test_an_unwritable_known_hosts_folder_names_the_setting_before_anything_is_created(world):
    world.cloud.exists = False
    blocker = world.tmp / "not-a-folder"
    blocker.write_text("a file where the folder should be\n")
    world.set_env(SSH_KNOWN_HOSTS=str(blocker / "known_hosts"))
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code != 0 and "SSH_KNOWN_HOSTS" in out.message and "Traceback" not in out.message
    assert "provision" not in world.cloud.calls
