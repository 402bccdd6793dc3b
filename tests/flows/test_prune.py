"""`inv prune [--dry-run]` through deploy.taskrun against the fake droplet(s): the pruning each
healthy release ends with, on demand; the live release and the rollback targets stay with their
images, no volume is ever named, and on a swarm every node is pruned (registry copies too)."""
from __future__ import annotations

import json

import pytest

from remote.lock import LockHolder
from tests.flows.conftest import World, flows
from tests.flows.fake_swarm import FakeSwarm, docr, use_swarm  # noqa: F401 - docr is a fixture

NODES = ["stackdeploy-1", "stackdeploy-1-2", "stackdeploy-1-3"]


def releases(world: World) -> list[str]:
    return sorted(p.name for p in (world.base / "releases").iterdir())


def deploy_changes(world: World, count: int) -> None:
    """``count`` deploys of changed api code, the first one full."""
    main = world.stack / "api" / "app" / "main.py"
    for n in range(count):
        main.write_text(f"# v{n}\n")
        out = world.invoke("deploy", flows.deploy, mode="update" if n else "full", update_only=bool(n))
        assert out.exit_code == 0, out.message


def api_refs(images) -> set[str]:
    return {ref for ref in images if "stack-api:" in ref}


def test_dry_run_lists_what_would_go_and_removes_nothing_then_prune_removes_it(world):
    deploy_changes(world, 4)                     # RELEASES_KEEP is 5: all four are still there
    before, images, calls = releases(world), dict(world.docker.images), len(world.docker.calls)
    world.set_env(RELEASES_KEEP="2")
    out = world.invoke("prune", flows.prune, mode="dry-run", dry_run=True)
    assert out.exit_code == 0, out.message
    assert f"would remove 2 release folder(s): {before[0]}, {before[1]}" in out.message
    assert "would remove 2 image tag(s): stack-api:" in out.message and "build cache unused for 72 h" in out.message
    assert f"stays: the live release {before[3]} and the rollback targets {before[2]}" in out.message
    assert releases(world) == before and world.docker.images == images
    assert not [a for a in world.docker.calls[calls:] if a[2:3] in (["rm"], ["prune"])]   # read only
    assert "lock" not in out.step_names and "would remove" in (out.run.folder / "prune.txt").read_text()

    out = world.invoke("prune", flows.prune, mode="remove")
    assert out.exit_code == 0, out.message
    assert releases(world) == before[2:] and world.current() == before[3]
    assert api_refs(world.docker.images) == {world.release_meta(r)["images"]["api"]["ref"] for r in before[2:]}
    assert out.step_names == ["settings", "token-check", "discover", "connect", "lock", "prune"]
    assert out.manifest["details"]["prune"]["nodes"][0]["releases"] == before[:2]
    assert not world.docker.volume_removals and not world.lock_held()
    again = world.invoke("prune", flows.prune, mode="dry-run", dry_run=True)
    assert "would remove 0 release(s), 0 image tag(s)" in again.message   # nothing more to take


def test_a_rolled_back_release_and_the_one_before_it_stay(world):
    deploy_changes(world, 5)
    ids = releases(world)
    assert world.invoke("rollback", flows.rollback, mode="rollback", release=ids[1]).exit_code == 0
    world.set_env(RELEASES_KEEP="2")
    assert world.invoke("prune", flows.prune, mode="remove").exit_code == 0
    # the newest two, the live one (rolled back to) and the one before it stay
    assert world.current() == ids[1] and releases(world) == [ids[0], ids[1], ids[3], ids[4]]
    refs = {r: world.release_meta(r)["images"]["api"]["ref"] for r in releases(world)}
    assert api_refs(world.docker.images) == set(refs.values())


def test_a_held_lock_refuses_prune_but_not_its_dry_run(world):
    deploy_changes(world, 1)
    (world.base / "lock").mkdir()
    holder = LockHolder(who="alice@laptop", when="2026-11-26T10:00:00+00:00", release="r-alice",
                        command="inv deploy", pid=1)
    (world.base / "lock" / "holder.json").write_text(json.dumps(holder.__dict__))
    assert world.invoke("prune", flows.prune, mode="dry-run", dry_run=True).exit_code == 0
    out = world.invoke("prune", flows.prune, mode="remove")
    assert out.exit_code == 5 and "alice@laptop" in out.manifest["error"] and "prune" not in out.step_names


@pytest.fixture
def swarm(world: World, docr) -> FakeSwarm:
    world.cloud.exists = False
    return use_swarm(world, docr, nodes=3)


def test_on_a_swarm_every_node_is_pruned_and_the_registry_copies_of_old_releases_go(world, swarm):
    deploy_changes(world, 4)
    for name in NODES[1:]:     # what the nodes pulled to run the releases (the fake models no pulls)
        swarm.engine(name).images.update({ref: i for ref, i in swarm.registry.items() if "stack-api:" in ref})
    ids = releases(world)
    kept_tags = {world.release_meta(r)["images"]["api"]["ref"].rpartition(":")[2] for r in ids[2:]}
    world.set_env(RELEASES_KEEP="2")
    out = world.invoke("prune", flows.prune, mode="remove")
    assert out.exit_code == 0, out.message
    assert releases(world) == ids[2:]
    for name in NODES:
        engine = swarm.engine(name)
        assert {ref.rpartition(":")[2] for ref in api_refs(engine.images)} == kept_tags, name
        assert ["docker", "builder", "prune", "--force", "--filter", "until=72h"] in engine.calls
        assert not engine.volume_removals
    assert any("/stack-api:" in ref for ref in world.docker.images)   # the leader's registry copies of kept ones
    assert out.message.count("would remove") == 0 and "stackdeploy-1-3: pruned" in out.message


def test_a_deploy_that_built_nothing_and_retires_no_release_asks_no_node_to_prune(world):
    deploy_changes(world, 2)                      # the second built the api: it pruned
    assert any(a[1:3] == ["builder", "prune"] for a in world.docker.calls)
    calls = len(world.docker.calls)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)   # no change: nothing built
    assert out.exit_code == 0, out.message
    assert not [a for a in world.docker.calls[calls:] if "prune" in a or a[1:2] == ["images"]]
    world.set_env(RELEASES_KEEP="2")              # now a release goes beyond the count: pruned, built or not
    calls = len(world.docker.calls)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 0, out.message
    assert any(a[1:3] == ["builder", "prune"] for a in world.docker.calls[calls:])
    assert len(releases(world)) == 2
