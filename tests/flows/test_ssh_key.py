"""`inv rotate-ssh-key` (deploy/flows/ssh_key.py) on the fake droplet, whose sshd lets in only
the keys in the deploy user's ~/.ssh/authorized_keys: the new key is authorized and tried
before the old one leaves the droplet and the account; cut at any command, one of the two
keys still opens the droplet and running it again finishes the rotation."""
from __future__ import annotations

import itertools

import paramiko
import pytest

from deploy import flows
from tests.flows.conftest import World

NEW_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINewNewNewNewNewNewNewNewNewNewNewNewNew op@new-laptop"


def _blob(line: str) -> str:
    return line.split()[1]


@pytest.fixture
def keyed(world: World):
    """The world right after cloud-init: SSH_KEY_PATH's key authorized and in the account; a new
    key pair beside it."""
    old = world.tmp / "keys" / "id_ed25519"
    (world.home / ".ssh").mkdir(parents=True)
    (world.home / ".ssh" / "authorized_keys").write_text(old.with_suffix(".pub").read_text())
    world.cloud.ssh_keys = [_blob(old.with_suffix(".pub").read_text())]
    new = world.tmp / "keys" / "new_ed25519"
    new.write_text("not used: the fake droplet takes no key\n")
    new.with_suffix(".pub").write_text(NEW_PUB + "\n")
    return world, old, new


def _authorized(world: World) -> set[str]:
    return {_blob(line) for line in (world.home / ".ssh" / "authorized_keys").read_text().splitlines() if line.strip()}


def _rotate(world: World, new) -> object:
    return world.invoke("rotate-ssh-key", flows.rotate_ssh_key, mode="rotate", new_key=str(new))


def test_the_new_key_replaces_the_old_on_the_droplet_and_in_the_account(keyed):
    world, old, new = keyed
    out = _rotate(world, new)
    assert out.exit_code == 0, out.message
    assert _authorized(world) == {_blob(NEW_PUB)}
    assert world.cloud.ssh_keys == [_blob(NEW_PUB)]
    assert f"SSH_KEY_PATH={new}" in out.message
    steps = out.step_names
    assert steps.index("try") < steps.index("account") < steps.index("revoke") < steps.index("refused")
    # the old key no longer deploys; the new one does
    refused = world.invoke("status", flows.status)
    assert refused.exit_code != 0 and "refused key" in refused.message
    world.set_env(SSH_KEY_PATH=str(new))
    assert world.invoke("deploy", flows.deploy).exit_code == 0


def test_cut_at_any_command_one_key_opens_the_droplet_and_running_again_finishes(keyed):
    world, old, new = keyed
    commands = []
    world.fault = lambda edge, detail: commands.append(detail) if edge == "run" else None
    assert _rotate(world, new).exit_code == 0
    total = len(commands)
    for cut in range(1, total + 1):
        (world.home / ".ssh" / "authorized_keys").write_text(old.with_suffix(".pub").read_text())
        world.cloud.ssh_keys = [_blob(old.with_suffix(".pub").read_text())]
        count = itertools.count(1)

        def fault(edge: str, detail: str) -> None:
            if edge == "run" and next(count) == cut:
                raise paramiko.SSHException("SSH session not active")
        world.fault = fault
        out = _rotate(world, new)   # a failure, or a reconnect that carried on
        assert _authorized(world) & {_blob(old.with_suffix(".pub").read_text()), _blob(NEW_PUB)}, cut
        world.fault = None
        _release_a_lock_left_by(world, out, new)
        again = _rotate(world, new)
        assert again.exit_code == 0, (cut, again.message)
        assert _authorized(world) == {_blob(NEW_PUB)} and world.cloud.ssh_keys == [_blob(NEW_PUB)], cut


def _release_a_lock_left_by(world: World, cut, new) -> None:
    """A cut at the lock's own release leaves it held, as any task does; in a new process the
    operator runs `inv lock.release --if-stale` (here the cut run's process lives on: a plain
    release), with the key that opens the droplet then."""
    if "deploy lock" not in cut.message or "not released" not in cut.message:
        return
    for key in (None, new):
        if key is not None:
            world.set_env(SSH_KEY_PATH=str(key))
        done = world.invoke("lock-release", flows.lock_release, mode="lock")
        if done.exit_code == 0:
            break
    world.set_env(SSH_KEY_PATH=str(world.tmp / "keys" / "id_ed25519"))
    assert done.exit_code == 0, done.message


@pytest.mark.parametrize("given, words", [
    ("", "--new-key is missing"),
    ("{tmp}/keys/nowhere", "does not exist"),
    ("{tmp}/keys/id_ed25519", "is the key SSH_KEY_PATH names already"),
])
def test_a_bad_new_key_changes_nothing_and_says_what_to_give(keyed, given, words):
    world, old, new = keyed
    before = _authorized(world)
    out = _rotate(world, given.format(tmp=world.tmp))
    assert out.exit_code == 2, out.message
    assert words in out.message, out.message
    assert "ssh-keygen" in out.message or "new key pair" in out.message
    assert _authorized(world) == before and world.cloud.ssh_keys == [_blob(old.with_suffix(".pub").read_text())]


def test_an_old_key_that_still_opens_the_droplet_after_its_removal_fails_the_run_naming_the_node(keyed):
    """sshd lets the old key in another way (another AuthorizedKeysFile): removing it from
    ~/.ssh/authorized_keys is not enough, and the run must not say the rotation is done."""
    world, old, new = keyed
    from tests.flows.fakes import FakeDroplet

    def lets_any_key_in(ssh):
        return lambda quick: FakeDroplet(world.base, world.docker, host=ssh.host, home=world.home)
    world.connector = lets_any_key_in
    out = _rotate(world, new)
    assert out.exit_code != 0
    said = " ".join(out.message.split())
    assert "stackdeploy-1 still lets the old key in" in said and "the new key works" in said
    assert out.step("refused")["status"] == "failed"
    assert _authorized(world) == {_blob(NEW_PUB)}           # the part that could be done, done
