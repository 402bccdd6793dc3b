"""Swarm command builders and parsers, as strings: what runs on a node, without a node."""
from __future__ import annotations

import json

import pytest

from remote import swarm


def test_a_node_advertises_listens_and_carries_data_on_its_private_address_only():
    cmd = swarm.init_command("10.177.0.2")
    assert "--advertise-addr 10.177.0.2" in cmd and "--listen-addr 10.177.0.2:2377" in cmd
    assert "--data-path-addr 10.177.0.2" in cmd


def test_the_join_token_travels_in_a_request_body_file_the_command_removes_never_in_any_argv():
    cmd = swarm.join_command("/tmp/.swarm-join-ab")
    assert "SWMTKN" not in cmd and "--token" not in cmd
    assert "--data-binary @/tmp/.swarm-join-ab" in cmd and "trap 'rm -f /tmp/.swarm-join-ab' EXIT" in cmd
    body = json.loads(swarm.join_body("SWMTKN-1-abc", "10.177.0.2", "10.177.0.3"))
    assert body == {"ListenAddr": "10.177.0.3:2377", "AdvertiseAddr": "10.177.0.3", "DataPathAddr": "10.177.0.3",
                    "RemoteAddrs": ["10.177.0.2:2377"], "JoinToken": "SWMTKN-1-abc"}


def test_a_role_other_than_worker_or_manager_is_refused():
    assert swarm.join_token_command("worker") == "docker swarm join-token -q worker"
    with pytest.raises(ValueError, match="worker or manager"):
        swarm.join_token_command("root")


@pytest.mark.parametrize("nodes,managers", [(1, 1), (2, 1), (3, 3), (5, 3), (9, 3)])
def test_three_managers_from_three_nodes_on_one_below(nodes, managers):
    assert swarm.manager_count(nodes) == managers


def test_docker_info_swarm_section_parsed():
    inactive = swarm.parse_info('{"NodeID":"","LocalNodeState":"inactive","ControlAvailable":false}\n')
    assert not inactive.joined and not inactive.manager
    active = swarm.parse_info('{"NodeID":"n1","LocalNodeState":"active","ControlAvailable":true,'
                              '"Cluster":{"ID":"c1"}}')
    assert active.joined and active.manager and active.node_id == "n1" and active.cluster_id == "c1"


def test_json_lines_skips_what_is_not_an_object():
    assert swarm.json_lines('{"ID":"a"}\n\nwarning: x\n{"ID":"b"}\n') == [{"ID": "a"}, {"ID": "b"}]


def test_a_stack_name_is_quoted():
    assert swarm.tasks_command("my stack").endswith("'my stack'")


def test_the_tasks_as_json_for_parsing_and_as_a_table_for_the_run_folder():
    assert swarm.tasks_command("st") == "docker stack ps --no-trunc --format '{{json .}}' st"
    assert swarm.tasks_command("st", as_json=False) == "docker stack ps --no-trunc st"


@pytest.mark.parametrize("text,expected", [("3/3", (3, 3)), ("0/1", (0, 1)), ("1/1 (max 1 per node)", (1, 1)),
                                           ("0/0", (0, 0))])
def test_replicas_column(text, expected):
    assert swarm.parse_replicas(text) == expected


def test_an_update_that_started_before_this_deploy_is_not_this_deploys_outcome():
    since = "2026-11-27T03:30:01.500000000Z"
    old = 'st_api {"State":"rollback_completed","StartedAt":"2026-11-27T03:10:00.1Z","Message":"rollback done"}'
    assert swarm.parse_update_status(old, since) == ("st_api", "", "")
    # Docker trims trailing zeros: .6Z is after .500000000Z
    new = 'st_api {"State":"rollback_completed","StartedAt":"2026-11-27T03:30:01.6Z","Message":"update rolled back"}'
    assert swarm.parse_update_status(new, since) == ("st_api", "rollback_completed", "update rolled back")
    assert swarm.parse_update_status("st_db null", since) == ("st_db", "", "")


def test_a_leaving_node_is_paused_drained_and_force_removed_by_id_its_services_scaled_around_it():
    assert swarm.availability_command("abc123", "drain") == "docker node update --availability drain abc123"
    assert swarm.availability_command("abc123", "pause") == "docker node update --availability pause abc123"
    with pytest.raises(ValueError, match="active, pause or drain"):
        swarm.availability_command("abc123", "off")
    assert swarm.role_command("abc123", manager=False) == "docker node demote abc123"
    assert swarm.role_command("x y", manager=True) == "docker node promote 'x y'"
    assert swarm.remove_command("abc123") == "docker node rm --force abc123"
    assert swarm.scale_command("stackdeploy_api", 3) == "docker service scale --detach stackdeploy_api=3"
    assert "{{.Spec.Mode.Replicated.Replicas}} {{.Spec.UpdateConfig.Order}}" in swarm.scale_info_command("x")
    assert "--filter desired-state=running" in swarm.node_tasks_command("abc123")
    # after a drain: also the tasks told to stop that are still stopping
    assert "desired-state" not in swarm.node_tasks_command("abc123", every_state=True)


@pytest.mark.parametrize("task,service", [("stackdeploy_api.2", "stackdeploy_api"),
                                          ("stackdeploy_web.x3k9v0n2", "stackdeploy_web"),
                                          (" \\_ stackdeploy_api.1", "stackdeploy_api")])
def test_a_task_name_names_its_service(task, service):
    assert swarm.task_service(task) == service



@pytest.mark.parametrize("running,desired,state,settled", [
    (3, 3, "completed", True), (3, 3, "", True), (2, 3, "", False), (3, 3, "updating", False),
    (3, 2, "", False),                   # scaled down: the extra task is still stopping
    (1, 1, "rollback_completed", True)])
def test_a_service_is_settled_when_exactly_its_replicas_run_and_no_update_is_in_flight(running, desired, state, settled):
    assert swarm.ServiceRollout("s", running, desired, state).settled is settled
