"""The tasks besides deploy, rollback, verify and plan on a 3-node swarm: push, up, collect,
releases and the deploy lock act on the swarm (node 1 is its leader, one lock per cluster),
not on node 1 as if it were a Compose droplet. Also with NODES left unset: the cluster that
exists (its droplets carry the cluster tag) is what a task acts on."""
from __future__ import annotations

import json

import pytest

from remote.lock import LockHolder
from tests.flows.conftest import World, flows
from tests.flows.fake_swarm import FakeSwarm, docr, use_swarm  # noqa: F401 - docr is a fixture

NODES = ["stackdeploy-1", "stackdeploy-1-2", "stackdeploy-1-3"]


@pytest.fixture
def swarm(world: World, docr) -> FakeSwarm:
    """A 3-node swarm running its first release."""
    world.cloud.exists = False
    swarm = use_swarm(world, docr, nodes=3)
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 0, out.message
    return swarm


def releases(world: World) -> list[str]:
    return sorted(p.name for p in (world.base / "releases").iterdir())


def compose_ups(world: World, swarm: FakeSwarm) -> list[str]:
    return [f"{name}: {' '.join(argv)}" for name, engine in swarm.engines.items() for argv in engine.calls
            if argv[:2] == ["docker", "compose"] and "up" in argv]


def on(world: World, name: str, since: int) -> list[str]:
    """The commands sent to droplet ``name`` (by its address) over connections ``since`` on."""
    ip = {d.name: d.public_ipv4 for d in world.cloud.find_cluster(None)}[name]
    return [c for d in world.droplets[since:] if d.host == ip for c in d.commands]


def hold_lock(world: World) -> None:
    (world.base / "lock").mkdir()
    holder = LockHolder(who="alice@laptop", when="2026-11-26T10:00:00+00:00", release="r-alice",
                        command="inv deploy", pid=1)
    (world.base / "lock" / "holder.json").write_text(json.dumps(holder.__dict__))


def test_push_uploads_and_builds_on_node_one_only_and_changes_nothing_live(world, swarm):
    live, running, deploys, before = world.current(), swarm.running(), len(swarm.deploys), releases(world)
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    connected = len(world.droplets)
    out = world.invoke("push", flows.push_only, mode="push")
    assert out.exit_code == 0, out.message
    assert len(releases(world)) == len(before) + 1 and world.built()[-1] == ["api"]
    assert (world.current(), swarm.running(), len(swarm.deploys)) == (live, running, deploys)
    assert not any(d.files_put for d in world.droplets[connected:] if d.host != world.cloud.ip)
    assert not any("build" in argv for name in NODES[1:] for argv in swarm.engine(name).calls)


def test_up_puts_the_pushed_release_live_through_stack_deploy_never_compose(world, swarm):
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    assert world.invoke("push", flows.push_only, mode="push").exit_code == 0
    pushed = max(releases(world))
    old_api = swarm.running()["api"]
    out = world.invoke("up", flows.up_only, mode="up")
    assert out.exit_code == 0, out.message
    assert compose_ups(world, swarm) == []
    assert world.current() == pushed and swarm.deploys[-1].path.startswith(str(world.base / "releases" / pushed))
    assert swarm.running()["api"] != old_api and swarm.running()["api"] in swarm.registry
    assert world.release_meta(pushed)["outcome"] == "success"


def test_up_with_nothing_newer_pushed_deploys_the_live_stack_again(world, swarm):
    live, running, deploys = world.current(), swarm.running(), len(swarm.deploys)
    out = world.invoke("up", flows.up_only, mode="up")
    assert out.exit_code == 0, out.message
    assert compose_ups(world, swarm) == []
    assert len(swarm.deploys) == deploys + 1 and (world.current(), swarm.running()) == (live, running)


def test_collect_writes_the_swarm_state_and_each_nodes_files(world, swarm):
    out = world.invoke("collect", flows.collect_only, mode="collect")
    assert out.exit_code == 0, out.message
    assert {"remote/stackdeploy-1/swarm-nodes.json", "remote/stackdeploy-1/swarm-services.json",
            "remote/stackdeploy-1/swarm-tasks.txt"} <= out.files
    for name in NODES:
        assert f"remote/{name}/docker-ps.txt" in out.files
    assert compose_ups(world, swarm) == []


def test_releases_lists_node_ones_releases_once(world, swarm):
    (world.stack / "api" / "app" / "main.py").write_text("# v2\n")
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    since = len(world.droplets)
    out = world.invoke("releases", flows.list_releases, mode="releases")
    assert out.exit_code == 0, out.message
    lines = (out.run.folder / "releases.txt").read_text().splitlines()
    assert [line.lstrip("* ").split()[0] for line in lines] == releases(world)     # two, each once
    assert sum(line.startswith("*") for line in lines) == 1
    assert not any("releases" in c for name in NODES[1:] for c in on(world, name, since))


def lock_task(world: World, task: str, flow) -> tuple[str, list[str]]:
    """Run a lock task with alice holding the lock: (its run.log, the commands nodes 2.. got)."""
    hold_lock(world)
    since = len(world.droplets)
    out = world.invoke(task, flow, mode="lock")
    assert out.exit_code == 0, out.message
    return (out.run.folder / "run.log").read_text(), [c for name in NODES[1:] for c in on(world, name, since)]


def test_lock_status_reads_node_ones_lock_once(world, swarm):
    log, elsewhere = lock_task(world, "lock-status", flows.lock_status)
    assert log.count("deploy lock: held by alice@laptop") == 1 and "deploy lock: free" not in log
    assert not any("/lock" in c for c in elsewhere)


def test_lock_release_releases_the_clusters_one_lock(world, swarm):
    log, elsewhere = lock_task(world, "lock-release", flows.lock_release)
    assert not world.lock_held() and log.count("deploy lock released (was held by") == 1
    assert "already free" not in log and not any("/lock" in c for c in elsewhere)


def test_with_nodes_unset_collect_finds_the_cluster_and_collects_the_swarm(world, swarm):
    world.set_env(NODES=None)
    out = world.invoke("collect", flows.collect_only, mode="collect")
    assert out.exit_code == 0 and out.manifest["outcome"] == "success", out.message
    assert "remote/stackdeploy-1/swarm-services.json" in out.files
    assert {f"remote/{name}/docker-ps.txt" for name in NODES} <= out.files


def test_with_nodes_unset_up_acts_on_the_swarm(world, swarm):
    world.set_env(NODES=None)
    deploys = len(swarm.deploys)
    out = world.invoke("up", flows.up_only, mode="up")
    assert out.exit_code == 0, out.message
    assert compose_ups(world, swarm) == [] and len(swarm.deploys) == deploys + 1


def test_with_nodes_unset_verify_checks_the_swarm(world, swarm):
    world.set_env(NODES=None)
    out = world.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 0 and out.manifest["outcome"] == "success", out.message
    assert {"remote/stackdeploy-1/swarm-services.json", "remote/stackdeploy-1-3/docker-ps.txt"} <= out.files
