"""provision -> push -> up -> verify -> collect does what `inv deploy` does, step by step, on one
droplet (tests/flows/test_swarm_tasks.py does the same on a swarm; tests/e2e on the lab)."""
from __future__ import annotations

from tests.flows.conftest import World, flows
from tests.flows.test_flows import ALL_BUILT, _ci_running


def _api_version(world: World, text: str) -> None:
    init = world.stack / "api" / "app" / "__init__.py"
    init.write_text(init.read_text() + f"\n# {text}\n")


def test_the_chain_on_a_new_droplet_puts_the_pushed_release_live(world):
    world.cloud.exists = False
    world.cloud_init = [_ci_running("modules-final"), 'state: done\n{"v1": {"errors": []}}']
    out = world.invoke("provision", flows.provision_only)
    assert out.exit_code == 0, out.message
    assert out.step_names[-2:] == ["connect", "bootstrap"]            # ends with the droplet ready
    assert "cloud-init done" in out.step("bootstrap")["message"]

    out = world.invoke("push", flows.push_only, mode="update")
    assert out.exit_code == 0, out.message
    pushed = out.manifest["details"]["push"]["release_id"]
    assert world.current() is None and world.docker.containers == {}   # built, nothing live
    assert world.built()[-1] == ALL_BUILT

    out = world.invoke("up", flows.up_only, mode="update")
    assert out.exit_code == 0, out.message
    assert world.current() == pushed and out.manifest["details"]["live_release"] == pushed
    assert world.release_meta(pushed)["outcome"] == "success"
    assert set(ALL_BUILT) <= set(world.docker.containers) and len(world.built()) == 1   # no second build

    for task, flow in (("verify", flows.verify_only), ("collect", flows.collect_only)):
        out = world.invoke(task, flow, mode=task)
        assert out.exit_code == 0 and out.manifest["outcome"] == "success", out.message
        assert "remote/compose-ps.json" in out.files


def test_push_right_after_a_new_droplet_waits_for_cloud_init(world):
    world.cloud.exists = False
    assert world.invoke("provision", flows.provision_only).exit_code == 0
    world.cloud_init = [_ci_running("modules-config"), _ci_running("modules-final"), 'state: done\n{}']
    out = world.invoke("push", flows.push_only, mode="update")
    assert out.exit_code == 0, out.message
    assert out.step_names.index("cloud-init") < out.step_names.index("push")
    log = (out.run.folder / "run.log").read_text()
    assert "cloud-init: modules-config" in log and "cloud-init: modules-final" in log


def test_up_rolls_forward_to_the_pushed_release_with_the_deploys_cutover(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    old_api = world.docker.containers["api"].id
    _api_version(world, "next")
    out = world.invoke("push", flows.push_only, mode="update")
    assert out.exit_code == 0 and world.current() == live, out.message
    assert world.built()[-1] == ["api"] and world.docker.containers["api"].id == old_api   # nothing live changed
    pushed = out.manifest["details"]["push"]["release_id"]

    out = world.invoke("up", flows.up_only, mode="update")
    assert out.exit_code == 0, out.message
    assert world.current() == pushed and world.docker.containers["api"].id != old_api
    assert out.manifest["details"]["up"]["replaced"] == ["api"]        # start-first, as in a deploy
    assert out.step("choose-release")["message"] == f"{live} -> {pushed}"


def test_up_with_nothing_newer_pushed_starts_the_live_release_again(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    world.docker.containers.pop("worker")                              # removed by hand
    out = world.invoke("up", flows.up_only, mode="update")
    assert out.exit_code == 0, out.message
    assert world.current() == live and "worker" in world.docker.containers
    assert out.step("choose-release")["message"] == f"{live} again (nothing newer pushed)"


def test_up_on_an_empty_droplet_says_to_push_first(world):
    out = world.invoke("up", flows.up_only, mode="update")
    assert out.exit_code == 1 and "no release on the droplet yet" in out.message and "inv push" in out.message


def test_a_known_hosts_file_that_cannot_be_written_stops_provision_before_any_droplet_is_made(world):
    """The new droplet's host key is kept beside SSH_KNOWN_HOSTS before the create call; where it
    cannot be, nothing is created (a droplet whose key is lost could never be trusted)."""
    world.cloud.exists = False
    blocker = world.tmp / "not-a-folder"
    blocker.write_text("a file where a folder should be\n")
    world.set_env(SSH_KNOWN_HOSTS=str(blocker / "known_hosts"))
    out = world.invoke("provision", flows.provision_only)
    assert out.exit_code == 1 and "cannot keep the new droplets' SSH host keys" in out.message
    assert "point SSH_KNOWN_HOSTS to a file in a folder this user can write" in out.message
    assert not set(world.cloud.calls) & world.cloud.WRITES and world.droplets == []
