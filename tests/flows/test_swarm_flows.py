"""The swarm path (NODES > 1) of deploy, update-only, rollback, verify and plan, against
FakeCloud's cluster and the fake swarm of tests/flows/fake_swarm.py: what a user sees (exit
code, run.json, artifacts) and what the swarm ends up running."""
from __future__ import annotations

import pytest

from tests.flows.conftest import World, flows
from tests.flows.fake_swarm import FakeSwarm, Meeting, docr, use_swarm  # noqa: F401 - docr is a fixture

NODES = ["stackdeploy-1", "stackdeploy-1-2", "stackdeploy-1-3"]
BUILT = ["api", "beat", "django", "flower", "frontend", "postgres", "traefik", "worker"]


@pytest.fixture
def swarm(world: World, docr) -> FakeSwarm:
    world.cloud.exists = False      # a new cluster: every node is created
    return use_swarm(world, docr, nodes=3)


def deployed(world: World, **kwargs):
    out = world.invoke("deploy", flows.deploy, mode="update" if kwargs.get("update_only") else "full", **kwargs)
    assert out.exit_code == 0, out.message
    return out


def next_api(world: World, text: str) -> None:
    (world.stack / "api" / "app" / "main.py").write_text(f"# {text}\n")


def releases(world: World) -> list[str]:
    return sorted(p.name for p in (world.base / "releases").iterdir())


def test_a_three_node_deploy_forms_the_swarm_builds_once_on_node_one_and_runs_every_service(world, swarm):
    out = deployed(world)
    assert [n["name"] for n in out.manifest["details"]["provision"]["nodes"]] == NODES
    assert out.manifest["details"]["swarm"]["managers"] == NODES          # three nodes: three managers
    assert sorted(n.hostname for n in swarm.nodes.values()) == NODES
    # images built once, on node 1, then pushed: the stack runs exactly what was pushed
    assert world.built() == [BUILT]
    assert not any("build" in argv for name in NODES[1:] for argv in swarm.engine(name).calls)
    running = swarm.running()
    assert sorted(running) == sorted(BUILT + ["redis"])
    assert all(running[s] in swarm.registry for s in BUILT) and running["redis"] == "redis:7-bookworm"
    assert swarm.placement("stackdeploy_api") == NODES                    # one api task per node
    assert swarm.placement("stackdeploy_postgres") == ["stackdeploy-1"]   # with its volume, on the data node
    assert out.step("stack-up")["status"] == "ok" and out.manifest["outcome"] == "success"
    for name in NODES:
        assert {f"remote/{name}/docker-ps.txt", f"remote/{name}/host.txt"} <= out.files
    assert {"remote/stackdeploy-1/swarm-nodes.json", "remote/stackdeploy-1/swarm-services.json"} <= out.files
    assert "api" in world.release_meta(world.current())["images"]


def test_the_release_images_are_pushed_to_the_registry_side_by_side(world, swarm):
    """A push to a registry across the internet waits on round trips per layer: side by side,
    a release's pushes overlap them (remote/swarm_release.publish)."""
    swarm.pushes_meet = Meeting(4)
    out = deployed(world)
    assert swarm.pushes_meet.arrived == len(set(swarm.registry)) >= 4
    assert out.step("stack-up")["status"] == "ok"


def test_a_push_that_fails_fails_the_release_naming_its_image_and_nothing_goes_live(world, swarm):
    deployed(world)
    good, good_api = world.current(), swarm.running()["api"]
    next_api(world, "v2")
    images = len(swarm.registry)                       # a release pushes each of its images
    swarm.pushes_meet = Meeting(images + 1, timeout=0.2)   # one more than there are: every push fails
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code != 0 and "pushing registry.digitalocean.com/stackdeploy/stack-" in out.message, out.message
    assert swarm.pushes_meet.arrived == images and len(swarm.registry) == images   # all tried, none pushed
    assert world.current() == good and swarm.running()["api"] == good_api


def test_update_only_on_three_nodes_rebuilds_and_rolls_only_what_changed(world, swarm):
    deployed(world)
    before = swarm.running()
    next_api(world, "v2")
    out = deployed(world, update_only=True)
    assert world.built()[-1] == ["api"]
    after = swarm.running()
    assert after["api"] != before["api"] and after["api"] in swarm.registry
    assert {s: i for s, i in after.items() if s != "api"} == {s: i for s, i in before.items() if s != "api"}
    updated = [n for n, s in swarm.services.items() if s.update_status]
    assert updated == ["stackdeploy_api"] and swarm.services["stackdeploy_api"].update_status["State"] == "completed"
    assert "provision" not in out.step_names and "bootstrap" not in out.step_names


def test_rollback_on_the_swarm_returns_the_previous_stack(world, swarm):
    deployed(world)
    first, first_api = world.current(), swarm.running()["api"]
    next_api(world, "v2")
    deployed(world, update_only=True)
    second = world.current()
    out = world.invoke("rollback", flows.rollback, mode="rollback", release=None)
    assert out.exit_code == 0, out.message
    assert world.current() == first and swarm.running()["api"] == first_api
    assert swarm.deploys[-1].path.endswith(f"/releases/{first}/" + swarm.deploys[-1].path.rsplit("/", 1)[1])
    assert world.release_meta(second)["outcome"] == "rolled-back"


def test_a_rollout_swarm_rolls_back_switches_current_back_and_exits_non_zero(world, swarm):
    deployed(world)
    good, good_api = world.current(), swarm.running()["api"]
    world.docker.unhealthy = {"api"}          # the next api image never gets healthy
    next_api(world, "v2, crashes at start")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code != 0 and "Swarm rolled back stackdeploy_api" in out.message
    assert world.current() == good and swarm.running()["api"] == good_api
    failed = max(r for r in releases(world) if r != good)
    assert world.release_meta(failed)["outcome"] == "failed"
    assert "remote/stackdeploy-1/swarm-tasks.txt" in out.files
    assert "unhealthy container" in (out.run.folder / "remote/stackdeploy-1/swarm-tasks.txt").read_text()
    assert not world.lock_held()


def test_shrinking_to_two_drains_the_third_node_before_deleting_it_and_never_node_one(world, swarm):
    deployed(world)
    third = swarm.node_named("stackdeploy-1-3").id
    world.set_env(NODES="2")
    out = deployed(world)
    assert world.cloud.deleted == ["stackdeploy-1-3"]
    assert sorted(n.hostname for n in swarm.nodes.values()) == NODES[:2]
    assert out.manifest["details"]["shrink"] == {"left_swarm": ["stackdeploy-1-3"], "deleted": ["stackdeploy-1-3"]}
    leader = [" ".join(a) for a in world.docker.calls]
    drained = leader.index(f"docker node update --availability drain {third}")
    assert drained < leader.index(f"docker node rm --force {third}")
    assert swarm.placement("stackdeploy_api") == NODES[:2]
    assert all(s.replicas == 2 or s.replicas == 1 for s in swarm.services.values())
    assert [n.hostname for n in swarm.nodes.values() if n.manager] == ["stackdeploy-1"]   # two nodes: one manager
    assert [d.name for d in world.cloud.find_cluster(None)] == NODES[:2]


def test_a_node_update_swarm_refuses_as_out_of_sequence_is_sent_again_and_the_shrink_completes(world, swarm):
    """Swarm versions each node object: an update read against a version that moved meanwhile
    (the node's heartbeat, a role change settling) is refused, and the next try reads it anew.
    CI met it pausing a leaving node; a shrink must not fail on it."""
    deployed(world)
    third = swarm.node_named("stackdeploy-1-3").id
    world.set_env(NODES="2")
    refused = {("stackdeploy-1-3", kind): 1 for kind in ("demote", "pause", "drain")}
    swarm.out_of_sequence = dict(refused)
    out = deployed(world)
    assert out.manifest["details"]["shrink"]["deleted"] == ["stackdeploy-1-3"]
    leader = [" ".join(a) for a in world.docker.calls]
    assert leader.count(f"docker node update --availability pause {third}") == 2
    assert leader.count(f"docker node update --availability drain {third}") == 2
    assert swarm.out_of_sequence == dict.fromkeys(refused, 0)


def test_a_node_update_refused_out_of_sequence_every_time_fails_the_run_naming_the_node(world, swarm):
    deployed(world)
    world.set_env(NODES="2")
    swarm.out_of_sequence = {("stackdeploy-1-3", "pause"): 1000}
    out = world.invoke("deploy", flows.deploy, mode="full")
    assert out.exit_code != 0
    assert "stackdeploy-1-3" in out.message and "update out of sequence" in out.message
    assert world.cloud.deleted == []


def test_growing_from_one_droplet_to_three_keeps_node_one_and_its_data(world, docr):
    """1 -> 3: the Compose droplet becomes node 1 of the swarm; its Compose stack is stopped with
    its volumes kept (PostgreSQL's data among them) once the swarm's stack is about to start."""
    world.cloud.exists = False
    swarm = use_swarm(world, docr, nodes=1)
    world.set_env(NODES=None)                                   # unset: a new stack is one droplet
    deployed(world)
    assert "postgres" in world.docker.containers and not swarm.nodes   # Compose, no swarm
    first = world.current()
    world.set_env(NODES="3")
    out = deployed(world)
    assert [(n["name"], n["created"]) for n in out.manifest["details"]["provision"]["nodes"]] == [
        ("stackdeploy-1", False), ("stackdeploy-1-2", True), ("stackdeploy-1-3", True)]
    assert any(argv[1:2] == ["compose"] and "down" in argv for argv in world.docker.calls)
    assert world.docker.volume_removals == [] and not any("-v" in argv or "--volumes" in argv
                                                          for argv in world.docker.calls if "down" in argv)
    assert swarm.placement("stackdeploy_postgres") == ["stackdeploy-1"] and world.current() != first
    world.set_env(NODES=None)                                   # unset again: the three nodes are the cluster
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 0 and "remote/stackdeploy-1-3/docker-ps.txt" in out.files, out.message


def test_growing_from_two_to_three_adds_a_node_and_promotes_it_to_manager(world, docr):
    world.cloud.exists = False
    swarm = use_swarm(world, docr, nodes=2)
    deployed(world)
    assert [n.hostname for n in swarm.nodes.values() if n.manager] == ["stackdeploy-1"]
    world.set_env(NODES="3")
    out = deployed(world)
    assert [n["created"] for n in out.manifest["details"]["provision"]["nodes"]] == [False, False, True]
    assert sorted(n.hostname for n in swarm.nodes.values() if n.manager) == NODES
    assert swarm.placement("stackdeploy_api") == NODES and world.cloud.deleted == []


@pytest.mark.parametrize("task,flow,mode,nodes,why", [
    ("deploy", flows.deploy, "update", "2", "the cluster has 3 nodes but NODES is 2"),
    ("deploy", flows.deploy, "update", "4", "the cluster should have 4 nodes but 3 exist"),
    ("rollback", flows.rollback, "rollback", "2", "the cluster has 3 nodes but NODES is 2"),
])
def test_update_only_or_rollback_with_another_node_count_is_refused_before_anything_is_written(
        world, swarm, task, flow, mode, nodes, why):
    deployed(world)
    next_api(world, "v2")
    before, connections, calls = releases(world), len(world.droplets), len(world.cloud.calls)
    world.set_env(NODES=nodes)
    kwargs = {"update_only": True} if task == "deploy" else {"release": None}
    out = world.invoke(task, flow, mode=mode, **kwargs)
    assert out.exit_code == 2 and why in out.message
    assert releases(world) == before and len(world.droplets) == connections
    assert not set(world.cloud.calls[calls:]) & world.cloud.WRITES and not world.lock_held()


@pytest.mark.parametrize("task,flow,mode", [("deploy", flows.deploy, "full"), ("provision", flows.provision_only, "full"),
                                            ("push", flows.push_only, "update")])
def test_one_node_asked_of_a_three_node_swarm_is_refused_before_anything_changes(world, swarm, task, flow, mode):
    """3 -> 1 is not automated: Compose beside the swarm would fight it for 80/443 and start an
    empty PostgreSQL. Refused (exit 2) before any write, SSH connection or lock, with the way back."""
    deployed(world)
    next_api(world, "v2")
    before, connections, calls = releases(world), len(world.droplets), len(world.cloud.calls)
    world.set_env(NODES="1")
    out = world.invoke(task, flow, mode=mode)
    assert out.exit_code == 2, out.message
    assert "3 nodes" in out.message and "NODES is 1" in out.message and "unset NODES" in out.message
    assert releases(world) == before and len(world.droplets) == connections
    assert not set(world.cloud.calls[calls:]) & world.cloud.WRITES and not world.lock_held()


def test_two_new_nodes_given_one_address_are_refused_before_connecting_or_pinning_a_key(world, swarm):
    world.cloud.addresses = {"stackdeploy-1-3": "203.0.113.22"}    # node 2's
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 1
    assert "stackdeploy-1-2 and stackdeploy-1-3 are both listed at 203.0.113.22" in out.message
    assert "connect" not in out.step_names and world.droplets == []
    known = world.tmp / "known_hosts"
    assert "203.0.113.22" not in (known.read_text() if known.exists() else "")


def test_verify_with_one_node_unreachable_is_partial_and_reports_the_others(world, swarm):
    deployed(world)
    swarm.unreachable.add("stackdeploy-1-3")
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.manifest["outcome"] == "partial" and out.exit_code == 4, out.message
    assert any("stackdeploy-1-3" in s["what"] for s in out.manifest["skipped"])
    assert "remote/stackdeploy-1-2/docker-ps.txt" in out.files
    assert not any(f.startswith("remote/stackdeploy-1-3/") for f in out.files)
    assert "remote/stackdeploy-1/swarm-services.json" in out.files


def test_verify_that_cannot_read_the_swarm_services_is_partial_not_a_pass(world, swarm):
    deployed(world)

    def refused(edge: str, detail: str) -> None:
        if edge == "run" and detail.startswith("docker service ls"):
            raise RuntimeError("Error response from daemon: rpc error: code = DeadlineExceeded")
    world.fault = refused
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.manifest["outcome"] == "partial" and out.exit_code == 4, out.message
    assert any("DeadlineExceeded" in s["why"] for s in out.manifest["skipped"] if "services" in s["what"])
    assert "DeadlineExceeded" in (out.run.folder / "remote/stackdeploy-1/swarm-services.json").read_text()


def test_verify_names_a_node_that_is_down(world, swarm):
    deployed(world)
    swarm.power_off("stackdeploy-1-3")
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code not in (0, 4) and "node stackdeploy-1-3 (Down)" in out.message
    placed = swarm.placement("stackdeploy_api")      # Swarm moved node 3's task to the others
    assert len(placed) == 3 and "stackdeploy-1-3" not in placed


def test_a_plan_with_three_nodes_changes_nothing(world, swarm):
    deployed(world)
    next_api(world, "v2")
    state = (releases(world), world.current(), swarm.running(), len(swarm.deploys), len(swarm.nodes),
             sorted(world.cloud.members))
    calls = len(world.cloud.calls)
    out = world.invoke("deploy", flows.plan, mode="full-plan")
    assert out.exit_code == 0, out.message
    [release] = out.manifest["details"]["plan"]["releases"]
    assert release["host"] == "stackdeploy-1" and "api" in str(release["build"])
    assert state == (releases(world), world.current(), swarm.running(), len(swarm.deploys), len(swarm.nodes),
                     sorted(world.cloud.members))
    assert not set(world.cloud.calls[calls:]) & world.cloud.WRITES and not world.lock_held()


def test_on_the_swarm_new_migrations_are_listed_backed_up_and_applied_before_swarm_rolls_anything(world, swarm):
    """One flow for one droplet and for N: the migrate step of a Compose deploy, on a swarm (a
    one-off of the release's image, with the live service's env, on the database's network)."""
    from tests.flows.test_flows import _change_django
    deployed(world)
    assert world.docker.migration_plans == []                  # the first release: django's start migrates
    world.docker.pending_migrations = ["notes.0002_drop_body"]
    _change_django(world)
    deploys = len(swarm.deploys)
    out = deployed(world, update_only=True)
    label = world.docker.database.backups[-1]["label"]
    assert out.step("migrate")["message"] == f"applied notes.0002_drop_body after backup {label}"
    names = out.step_names
    assert names.index("migrate") < names.index("backup") < names.index("stack-up")
    release = out.manifest["details"]["push"]["release_id"]
    assert world.docker.migration_images and all(i.endswith(":" + release) for i in world.docker.migration_images)
    assert len(swarm.deploys) == deploys + 1                   # the stack deployed once, after migrating
    assert world.release_meta(world.current())["migrations"]["applied"] == ["notes.0002_drop_body"]
    # and a rollback across it is refused as on one droplet
    refused = world.invoke("rollback", flows.rollback, mode="rollback", release=None)
    assert refused.exit_code == 1 and "expects an older schema" in refused.message
