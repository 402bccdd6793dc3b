"""Pure helpers: manifest diff, release ids, change -> service mapping, compose output parsing."""
from __future__ import annotations

from datetime import datetime, timezone

from remote.compose import (ServiceState, failed_build_image, failing_services, parse_ps_json,
                            states_from_ps)
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


def test_ps_json_both_shapes_and_failure_ranking():
    lines = ('{"Service":"db","State":"running","Health":"unhealthy","Status":"Up (unhealthy)","ID":"1"}\n'
             '{"Service":"api","State":"created","Health":"","Status":"Created","ID":"2"}\n'
             '{"Service":"web","State":"running","Health":"","Status":"Up","ID":"3"}\n')
    rows = parse_ps_json(lines)
    assert parse_ps_json("[" + ",".join(lines.strip().splitlines()) + "]") == rows
    assert parse_ps_json("") == []
    states = states_from_ps(rows)
    assert states["web"].ok and not states["db"].ok
    failing = failing_services(states)
    assert [n for n, _ in failing] == ["db", "api"]  # root cause first
    assert failing[0][1].startswith("unhealthy")
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
