"""Pure helpers: manifest diff, release ids, change -> service mapping, compose output parsing."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from remote.compose import ServiceState, failed_build_image, failing_services, states_from_containers
from remote.status import json_rows
from remote.sync import diff_manifests, is_ignored, new_release_id, services_for_changes

COMPOSE = {"services": {
    "api": {"build": "./api"},
    "web": {"build": {"context": "frontend", "dockerfile": "../docker/web.Dockerfile"}},
    "redis": {"image": "redis:7"},
    "traefik": {"image": "traefik:v3"},
}}


def test_changed_paths_map_to_services_by_build_context():
    assert services_for_changes(COMPOSE, ["api/main.py"]) == {"api"}
    assert services_for_changes(COMPOSE, ["frontend/src/App.tsx", "README.md"]) == {"web"}
    assert services_for_changes(COMPOSE, ["docker/web.Dockerfile"]) == {"web"}
    assert services_for_changes(COMPOSE, ["apiary/x.py", "traefik/dynamic.yml"]) == set()
    # compose file inside a subfolder: contexts are relative to it
    assert services_for_changes(COMPOSE, ["stack/api/x.py", "api/x.py"], "stack") == {"api"}
    # a context of "." means every change rebuilds it
    assert services_for_changes({"services": {"all": {"build": "."}}}, ["x"]) == {"all"}


def test_manifest_diff_and_release_ids():
    old = {"a": {"sha256": "1", "mode": 420}, "b": {"sha256": "2", "mode": 420}}
    new = {"a": {"sha256": "1", "mode": 493}, "c": {"sha256": "3", "mode": 420}}
    assert diff_manifests(old, new) == (["a", "c"], ["b"])
    t = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    rid = new_release_id(new, t)
    assert rid.startswith("20250304T050607000Z-") and len(rid) == len("20250304T050607000Z-") + 8
    assert new_release_id(new, t) == rid and new_release_id(old, t) != rid
    later = new_release_id(old, datetime(2025, 3, 4, 5, 6, 8, tzinfo=timezone.utc))
    assert sorted([later, rid]) == [rid, later]  # sortable by time


def test_ignore_rules():
    assert is_ignored(".env", False) and is_ignored(".env.production", False)
    assert not is_ignored(".env.example", False) and not is_ignored("env.py", False)
    assert is_ignored("node_modules", True) and not is_ignored("node_modules", False)


def test_container_rows_give_each_service_its_newest_container_and_failures_rank_root_causes_first():
    rows = json_rows(
        '{"service":"db","state":"running","health":"unhealthy","restarts":2,"exit":0,"id":"1","number":"1"}\n'
        'Warning: a line docker printed that is not a row\n'
        '{"service":"api","state":"created","health":"","restarts":0,"exit":0,"id":"2","number":"1"}\n'
        '{"service":"web","state":"running","health":"","restarts":0,"exit":0,"id":"4","number":"2",'
        '"image_id":"sha256:new","config_hash":"h2"}\n'
        '{"service":"web","state":"exited","health":"","restarts":0,"exit":137,"id":"3","number":"1"}\n')
    states = states_from_containers(rows)
    assert states["web"].ok and not states["db"].ok
    assert (states["web"].container_id, states["web"].image_id, states["web"].config_hash) == ("4", "sha256:new", "h2")
    assert "web" not in states_from_containers(rows, exclude=frozenset({"3", "4"}))
    assert states_from_containers(rows, exclude=frozenset({"4"}))["web"].status == "exited (137)"
    failing = failing_services(states)
    assert [n for n, _ in failing] == ["db", "api"]  # root cause first
    assert failing[0][1] == "unhealthy (running (unhealthy))"
    assert failing_services({"w": ServiceState("w", "exited", "", "Exited (1)", "x")}) == \
        [("w", "exited (Exited (1))")]


def test_failed_build_image_from_progress_lines():
    out = (" Image p-bad Building \n Image p-app Building \n Image p-app Built \n"
           "The command '/bin/sh -c false' returned a non-zero code: 1\n")
    assert failed_build_image(out) == "p-bad"
    assert failed_build_image("failed to solve") is None


def test_a_command_is_named_in_the_profile_by_its_leading_words_not_its_paths_or_options():
    from remote.host import command_label
    assert command_label("docker compose -p stackdeploy -f /opt/x/current/compose.yml --env-file /opt/x/.env "
                         "up -d --wait api") == "docker compose stackdeploy up api"
    assert command_label("cd /opt/x && FOO=1 flock -n /run/x.lock true") == "cd flock true"
    assert command_label("/usr/bin/true") == "/usr/bin/true"


def test_a_host_never_opens_more_channels_at_once_than_sshd_allows():
    import threading
    import time as _time
    from remote.host import MAX_CHANNELS, Host, Result
    from remote.layout import ReleaseLayout
    active, peak, lock = [0], [0], threading.Lock()

    class Slow:
        host = "203.0.113.10"

        def run(self, command, timeout=None):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            _time.sleep(0.05)
            with lock:
                active[0] -= 1
            return Result(command, 0, "")

    target = Host("droplet-1", "203.0.113.10", ReleaseLayout("/srv/app"), connector=lambda quick: Slow()).open()
    threads = [threading.Thread(target=target.run, args=("true",)) for _ in range(3 * MAX_CHANNELS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == MAX_CHANNELS <= 6        # OpenSSH's default MaxSessions is 10 (SFTP holds one; a margin)


def _stack_services():
    sf = {"update_config": {"order": "start-first"}}
    healthy = {"condition": "service_healthy"}
    return {"postgres": {}, "redis": {}, "traefik": {},
            "django": {"deploy": sf, "depends_on": {"postgres": healthy, "redis": healthy}},
            "api": {"deploy": sf, "depends_on": {"django": healthy, "redis": healthy}},
            "beat": {"depends_on": {"django": healthy}},
            "frontend": {"deploy": sf}}


def _running(hashes):
    from remote.compose import ServiceState
    return {n: ServiceState(n, "running", "healthy", "Up", f"id-{n}", f"img-{n}", h) for n, h in hashes.items()}


def test_a_cutover_plan_replaces_changed_services_in_dependency_order_and_leaves_compose_out_when_it_can():
    from remote.cutover import IN_PLACE, START_FIRST, plan_cutover
    services = _stack_services()
    live = {n: "old" for n in services}
    wanted = dict(live, django="new", beat="new", frontend="new")
    plan = plan_cutover(services, _running(live), wanted, set())
    assert list(plan.steps.items()) == [("django", START_FIRST), ("beat", IN_PLACE), ("frontend", START_FIRST)]
    assert plan.stop_first == ["beat"] and not plan.compose_up
    # a bind-mounted file of Traefik changed: recreated in place, whatever its hash says
    plan = plan_cutover(services, _running(live), live, {"traefik"})
    assert plan.steps == {"traefik": IN_PLACE} and plan.stop_first == ["traefik"] and not plan.compose_up
    assert plan_cutover(services, _running(live), live, set()).steps == {}


def test_a_changed_service_others_depend_on_is_recreated_first_so_their_new_containers_find_it_new():
    # A rotated database password: the new django only connects to a PostgreSQL that runs with
    # it, so PostgreSQL (stop-first: one container on its volume) is recreated before the roll.
    from remote.cutover import IN_PLACE, START_FIRST, plan_cutover
    services = _stack_services()
    live = {n: "old" for n in services}
    plan = plan_cutover(services, _running(live), dict(live, postgres="new", redis="new", django="new", api="new",
                                                       beat="new"), set())
    assert plan.first == ["postgres", "redis"]
    assert list(plan.steps.items()) == [("django", START_FIRST), ("api", START_FIRST), ("beat", IN_PLACE)]
    assert plan.stop_first == ["beat", "postgres", "redis"] and not plan.compose_up


def test_a_cutover_plan_leaves_to_compose_up_what_is_missing():
    from remote.cutover import plan_cutover
    services = _stack_services()
    live = {n: "old" for n in services}
    gone = {n: h for n, h in live.items() if n != "frontend"}
    assert plan_cutover(services, _running(gone), live, set()).compose_up          # a service to start
    assert plan_cutover({n: d for n, d in services.items() if n != "beat"}, _running(live), live, set()).compose_up


@pytest.mark.parametrize("status, expected", [
    ("Up 3 seconds (health: starting)", ("running", "starting")),
    ("Up 2 minutes (healthy)", ("running", "healthy")),
    ("Up 5 seconds (unhealthy)", ("running", "unhealthy")),
    ("Up 2 minutes", ("running", "")),
    ("Exited (1) 3 seconds ago", ("exited", "")),
    ("Created", ("created", "")),
    ("Restarting (1) 2 seconds ago", ("restarting", "")),
    ("Up 1 minute (Paused)", ("paused", "")),
])
def test_the_progress_poller_reads_state_and_health_from_dockers_status_text(status, expected):
    from remote.progress import parse_status
    assert parse_status(status) == expected


SHOWN = """[X]  contenttypes.0001_initial
[X]  notes.0001_initial
[X]  notes.0002_note_tags
[X]  auth.0012_alter_user_first_name_max_length
[X]  notes.0003_more
[X]  tags.0001_initial
[ ]  notes.0004_broken
"""


def test_undo_targets_go_back_to_each_apps_migration_before_its_first_applied_now_last_app_first():
    from remote.compose import undo_targets
    assert undo_targets(["notes.0002_note_tags", "notes.0003_more", "tags.0001_initial"], SHOWN) == [
        ("tags", "zero"), ("notes", "0001_initial")]
    assert undo_targets(["notes.0003_more"], SHOWN) == [("notes", "0002_note_tags")]
    with pytest.raises(ValueError):
        undo_targets(["notes.0009_unknown"], SHOWN)
    with pytest.raises(ValueError):
        undo_targets(["notes.0003_more"], "Traceback (most recent call last):\n")


def test_the_migrate_command_varied_for_listing_and_unapplying():
    from remote.compose import showmigrations_argv, unapply_argv
    argv = ["python", "manage.py", "migrate", "--noinput"]
    assert showmigrations_argv(argv) == ["python", "manage.py", "showmigrations", "--plan"]
    assert unapply_argv(argv, "notes", "0001_initial") == ["python", "manage.py", "migrate", "notes", "0001_initial",
                                                           "--noinput"]


def test_collect_reads_containers_from_docker_inspect_lines_by_service_with_what_state_they_are_in():
    import json as _json

    from remote.collect import containers_table, parse_containers
    lines = [
        {"service": "worker", "container": "/stackdeploy-worker-1", "state": "exited", "health": "", "exit": 137,
         "started": "2026-12-07T22:50:29Z", "restarts": 2, "image": "stack-worker:r2", "id": "b" * 64},
        {"service": "api", "container": "/stackdeploy-api-2", "state": "running", "health": "starting", "exit": 0,
         "started": "2026-12-07T22:50:30Z", "restarts": 0, "image": "stack-api:r2", "id": "a" * 64},
    ]
    rows = parse_containers("".join(_json.dumps(line) + "\n" for line in lines))
    assert [(r["service"], r["container"], r["status"], r["restarts"]) for r in rows] == [
        ("api", "stackdeploy-api-2", "running (starting)", 0), ("worker", "stackdeploy-worker-1", "exited (137)", 2)]
    table = containers_table(rows).splitlines()
    assert table[0].split() == ["SERVICE", "CONTAINER", "STATUS", "RESTARTS", "STARTED", "IMAGE"]
    assert table[2].split() == ["worker", "stackdeploy-worker-1", "exited", "(137)", "2", "2026-12-07T22:50:29Z",
                                "stack-worker:r2"]
    assert parse_containers("") == [] and containers_table([]).split() == table[0].split()
