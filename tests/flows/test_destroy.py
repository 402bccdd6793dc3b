"""`inv destroy` through deploy.taskrun against FakeCloud: the listing first, the typed name, the
refusals that remove nothing (exit 2, exit 5), a stack partly gone finished, the known_hosts pins
of this stack forgotten and another's kept, on one droplet and on three."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from deploy import cloud, hostkey
from deploy.redact import SecretRegistry
from remote.lock import LockHolder
from tests.flows.conftest import World, flows
from tests.flows.fakes import Unreachable

NODE1 = "stackdeploy-1"


def typed(answer: str):
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return answer
    ask.asked = asked   # type: ignore[attr-defined]
    return ask


def no_terminal(prompt: str) -> str:
    raise EOFError


def never(prompt: str) -> str:
    raise AssertionError("--yes must not ask")


def destroy(world: World, **kwargs):
    return world.invoke("destroy", flows.destroy, mode="keep-data", **kwargs)


def members(world: World, *numbers: int) -> None:
    for k in numbers:
        world.cloud.members[k] = cloud.DropletInfo(id=100 + k, name=f"{NODE1}-{k}", region="fra1", size="s-2vcpu-4gb",
                                                   status="active", public_ipv4=f"203.0.113.{20 + k}",
                                                   created=False, private_ipv4=f"10.110.0.{k}")
    world.cloud.tagged = True


def pinned(world: World, name: str, entry: str) -> None:
    """As provision leaves a droplet it created: its host key kept and pinned on this machine."""
    known_hosts = world.tmp / "known_hosts"
    key = hostkey.generate(SecretRegistry())
    hostkey.save_pending(key, known_hosts, name)
    hostkey.promote(known_hosts, name)
    hostkey.pin(known_hosts, entry, key.public)


def test_the_listing_comes_first_then_the_typed_name_removes_dns_before_the_droplet(world):
    pinned(world, NODE1, "203.0.113.10")
    ask = typed(NODE1)
    out = destroy(world, ask=ask)
    assert out.exit_code == 0, out.message
    listing = (out.run.folder / "destroy-plan.txt").read_text()
    assert "remove  droplet   stackdeploy-1" in listing and "remove  firewall  stackdeploy-1" in listing
    assert "remove  dns       app.example.test" in listing and "Docker volumes" in listing
    assert "known_hosts: pins of 203.0.113.10 and the host keys kept for stackdeploy-1" in listing
    assert out.message.index("remove  droplet") < out.message.index("stackdeploy-1 typed")   # listed, then asked
    assert ask.asked and NODE1 in ask.asked[0]
    assert world.cloud.removed == ["dns app.example.test", "droplet stackdeploy-1", "firewall stackdeploy-1"]
    assert out.step_names == ["settings", "token-check", "inventory", "lock", "remove", "forget"]
    assert out.manifest["outcome"] == "success"
    assert [i["name"] for i in out.manifest["details"]["destroy"]["remove"]][:2] == ["app.example.test", NODE1]
    assert hostkey.load_public(world.tmp / "known_hosts", NODE1) is None
    assert "203.0.113.10" not in (world.tmp / "known_hosts").read_text()


def test_a_second_destroy_finds_nothing_left_and_exits_0(world):
    assert destroy(world, yes=True).exit_code == 0
    calls = len(world.cloud.calls)
    out = destroy(world, ask=never)
    assert out.exit_code == 0 and "nothing of stack stackdeploy-1 is left" in out.message
    assert "nothing to remove" in out.message
    assert "remove_stack" not in world.cloud.calls[calls:] and "lock" not in out.step_names


def test_without_a_terminal_and_without_yes_nothing_is_removed(world):
    out = destroy(world, ask=no_terminal)
    assert out.exit_code == 2 and out.manifest["outcome"] == "config-error"
    assert "nothing was removed: there is no terminal" in out.manifest["error"] and "--yes" in out.manifest["error"]
    assert world.cloud.removed == [] and world.cloud.exists and not world.lock_held()


def test_a_wrong_name_typed_removes_nothing(world):
    out = destroy(world, ask=typed("stackdeploy-2"))
    assert out.exit_code == 2
    assert "'stackdeploy-2' is not the droplet's name 'stackdeploy-1'" in out.manifest["error"]
    assert world.cloud.removed == [] and not world.lock_held()


def test_yes_removes_without_asking(world):
    out = destroy(world, yes=True, ask=never)
    assert out.exit_code == 0 and not world.cloud.exists and "--yes: removing without asking" in out.message


def test_a_destroy_during_a_deploy_is_refused_naming_the_deploy(world):
    (world.base / "lock").mkdir()
    holder = LockHolder(who="alice@laptop", when="2026-11-26T10:00:00+00:00", release="r-alice",
                        command="inv deploy", pid=1)
    (world.base / "lock" / "holder.json").write_text(json.dumps(holder.__dict__))
    out = destroy(world, ask=never)
    assert out.exit_code == 5
    assert "nothing was removed" in out.manifest["error"] and "alice@laptop" in out.manifest["error"]
    assert world.cloud.removed == [] and json.loads((world.base / "lock" / "holder.json").read_text())["who"] == "alice@laptop"


def test_an_unreachable_droplet_is_removed_without_the_lock(world):
    world.connector = Unreachable()
    out = destroy(world, yes=True)
    assert out.exit_code == 0 and not world.cloud.exists
    assert out.step("lock")["status"] == "warning" and "no deploy lock taken" in out.step("lock")["message"]


def test_a_swarm_goes_through_the_same_flow(world):
    members(world, 2, 3)
    out = destroy(world, ask=typed(NODE1))
    assert out.exit_code == 0, out.message
    assert [r for r in world.cloud.removed if r.startswith("droplet")] == [
        "droplet stackdeploy-1", "droplet stackdeploy-1-2", "droplet stackdeploy-1-3"]
    assert not world.cloud.members and not world.cloud.exists


def test_a_stack_partly_gone_is_finished_and_a_failure_half_way_is_finished_by_the_next(world):
    members(world, 2)
    world.cloud.exists = False                        # node 1 deleted by hand in the control panel
    world.cloud.fail_removing = "firewall"
    out = destroy(world, yes=True)
    assert out.exit_code == 1 and "deleting firewall" in out.manifest["error"]
    assert out.step("lock")["status"] == "skipped" and "node 1 is gone" in out.step("lock")["message"]
    assert world.cloud.removed == ["dns app.example.test", "droplet stackdeploy-1-2"]
    out = destroy(world, yes=True)
    assert out.exit_code == 0 and world.cloud.removed[-1] == "firewall stackdeploy-1" and not world.cloud.leftovers


def test_data_stays_without_include_data_and_goes_with_it(world):
    volume = cloud.Item("volume", "pgdata", "id v-1, 10 GiB", "volumes/v-1", ("stackdeploy-1-swarm",))
    world.cloud.data = [volume]
    world.cloud.kept = [cloud.Kept("SSH key stackdeploy-deploy", "1 other droplet(s) in the account may have been "
                                   "created with it")]
    out = destroy(world, yes=True, backups=lambda s: f"s3://backups/{s.droplet_name}")
    assert out.exit_code == 0
    assert "keep    volume    pgdata  (id v-1, 10 GiB): data, --include-data removes it" in out.message
    assert "keep    SSH key stackdeploy-deploy: 1 other droplet(s)" in out.message
    assert "data kept: the backup repository s3://backups/stackdeploy-1" in out.message
    assert "volume pgdata" not in world.cloud.removed and world.cloud.data == [volume]
    out = world.invoke("destroy", flows.destroy, mode="with-data", yes=True, include_data=True)
    assert out.exit_code == 0 and world.cloud.removed[-1] == "volume pgdata"


def test_droplet_backups_are_not_deleted_without_include_data(world):
    world.cloud.backups = ("stackdeploy-1: 2 backup(s)",)
    out = destroy(world, yes=True)
    assert out.exit_code == 2 and "deletes a droplet's backups with it" in out.manifest["error"]
    assert world.cloud.removed == []
    assert world.invoke("destroy", flows.destroy, mode="with-data", yes=True, include_data=True).exit_code == 0


def test_another_stacks_pins_and_kept_keys_on_this_machine_stay(world):
    pinned(world, NODE1, "203.0.113.10")
    pinned(world, "stackdeploy-1-2", "198.51.100.30")   # a droplet of a stack named stackdeploy-1-2
    pinned(world, "blog", "198.51.100.40")
    world.cloud.kept = []
    inventory = world.cloud.stack_inventory

    def with_foreign(spec, known_addresses=(), on_event=None):
        return dataclasses.replace(inventory(spec, known_addresses, on_event),
                                   foreign_names=frozenset({"stackdeploy-1-2", "blog"}))
    world.cloud.stack_inventory = with_foreign        # type: ignore[method-assign]
    assert destroy(world, yes=True).exit_code == 0
    known_hosts: Path = world.tmp / "known_hosts"
    assert "198.51.100.30" in known_hosts.read_text() and "198.51.100.40" in known_hosts.read_text()
    assert "203.0.113.10" not in known_hosts.read_text()
    assert hostkey.load_public(known_hosts, "stackdeploy-1-2") and hostkey.load_public(known_hosts, "blog")


def test_backups_kept_on_the_droplet_are_listed_as_going_with_it(world):
    out = destroy(world, yes=True)
    assert out.exit_code == 0
    assert "the database's backups, kept on the droplet while SPACES_BUCKET is unset" in out.message
    assert "data kept: the backup repository" not in out.message
