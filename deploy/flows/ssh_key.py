"""`inv rotate-ssh-key --new-key PATH`: the deploy SSH key replaced on every node and in the
DigitalOcean account, with a key that opens every droplet at each moment.

    find -> connect every node with SSH_KEY_PATH (or, when an earlier rotation was cut short
    after removing it, with the new key)
    -> authorize: the new key beside the current one on every node
    -> try: a new connection with the new key to every node (nothing is removed before it works);
       from here on only these connections are used -> the deploy lock on node 1
    -> account: the new key registered, then the old one removed (droplets made from now on get
       the new one; with DROPLET_IP and no token, the account is left as it is, said)
    -> revoke: the old key removed on every node, over the new key's connections
    -> refused: a connection with the old key is refused by every node

Running it again after any stop finishes it: each step is a no-op where it was done. The
operator then sets SSH_KEY_PATH to the new key (the run says so); SSH_KNOWN_HOSTS is unchanged
(the droplets' host keys stay).
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.errors import ConfigError, OperatorError
from deploy import steps, wiring
from deploy.cluster import Node
from deploy.flows import reach
from deploy.report.run import Run
from deploy.settings import Settings
from deploy.wiring import REAL_EDGES, Edges, Inventory
from remote import authorized_keys
from remote.connection import KeyRefused

FLAG = "--new-key"


@dataclasses.dataclass(frozen=True)
class NewKey:
    path: Path
    public: str


def read_new_key(path: str, current_public: str) -> NewKey:
    """The key pair at ``path``, checked before anything changes."""
    if not path:
        raise ConfigError(FLAG, "is missing: the new key pair to rotate to",
                          "create one (ssh-keygen -t ed25519 -f ~/.ssh/stack_new -N '') and run "
                          "`inv rotate-ssh-key --new-key ~/.ssh/stack_new`")
    key = Path(path).expanduser()
    pub = Path(str(key) + ".pub")
    if not key.is_file():
        raise ConfigError(FLAG, f"points to {key}, which does not exist",
                          f"create the new key first: ssh-keygen -t ed25519 -f {key} -N ''")
    if not pub.is_file():
        raise ConfigError(FLAG, f"has no public key beside it ({pub})", f"write it with: ssh-keygen -y -f {key} > {pub}")
    public = pub.read_text(encoding="utf-8").strip()
    try:
        same = authorized_keys.blob(public) == authorized_keys.blob(current_public)
    except ValueError:
        raise ConfigError(FLAG, f"{pub} is not one OpenSSH public key line",
                          "give a key pair made by ssh-keygen (its .pub reads 'ssh-ed25519 AAAA... comment')") from None
    if same or "\n" in public:
        raise ConfigError(FLAG, f"{pub} is the key SSH_KEY_PATH names already" if same else
                          f"{pub} holds more than one key", "give a new key pair of its own")
    return NewKey(path=key, public=public)


def rotate_ssh_key(run: Run, settings: Settings, edges: Edges = REAL_EDGES, new_key: str = "") -> None:
    old_public = wiring.public_key(settings)
    new = read_new_key(new_key, old_public)
    with_new = dataclasses.replace(settings, ssh_key_path=new.path)
    cluster = reach.find(run, settings, edges)
    with _connected(run, settings, with_new, edges, cluster.nodes) as current, run.step("authorize") as step:
        for target in current:
            target.run(authorized_keys.authorize(new.public), "adding the new key")
        step.note(f"the new key is authorized on {len(current)} node(s), beside the current one")
    # From here on, only the new key's connections: a reconnect after a lost one (the lock's
    # release among them) must not depend on the key being removed.
    with run.step("try") as step:
        trying = _open(run, with_new, edges, cluster.nodes)
        step.note(f"the new key opens {len(trying)} node(s)")
    try:
        with steps.locked(run, trying.targets[0], "(rotate-ssh-key)", settings.lock_wait):
            _account(run, settings, edges, new)
            with run.step("revoke") as step:
                for target in trying:
                    target.run(authorized_keys.revoke(old_public, keep=new.public), "removing the old key")
                step.note(f"the old key is removed on {len(trying)} node(s)")
    finally:
        trying.close()
    _refused(run, settings, edges, cluster.nodes)
    run.record("ssh_key", {"new_key": str(new.path), "nodes": [n.name for n in cluster.nodes]})
    run.log(f"now set SSH_KEY_PATH={new.path} in your env file: the old key no longer opens the droplets")


def _open(run: Run, settings: Settings, edges: Edges, nodes: tuple[Node, ...]) -> Inventory:
    """Every node connected with ``settings``' key, or none (closed again) and the error."""
    inventory = wiring.inventory(settings, nodes, edges, run.command_timer)
    try:
        for target in inventory:
            target.open()
    except BaseException:
        inventory.close()
        raise
    return inventory


@contextmanager
def _connected(run: Run, settings: Settings, with_new: Settings, edges: Edges,
               nodes: tuple[Node, ...]) -> Iterator[Inventory]:
    """Every node over SSH_KEY_PATH; when a node refuses it, over the new key (a rotation cut
    short after its revoke step: the new key was authorized on every node before)."""
    with run.step("connect") as step:
        try:
            inventory = _open(run, settings, edges, nodes)
            step.note(f"{len(nodes)} node(s) with SSH_KEY_PATH")
        except KeyRefused as refused:
            try:
                inventory = _open(run, with_new, edges, nodes)
            except KeyRefused:
                raise refused from None
            step.note("SSH_KEY_PATH is refused and the new key opens the nodes: finishing a rotation begun earlier")
    try:
        yield inventory
    finally:
        inventory.close()


def _account(run: Run, settings: Settings, edges: Edges, new: NewKey) -> None:
    if not settings.token:
        run.skip_step("account", "no DIGITALOCEAN_TOKEN: the account's SSH keys are as they were (a droplet made "
                                 "later would get the old key); run again with the token to replace it there")
        return
    with run.step("account") as step:
        changed = edges.cloud.replace_ssh_key(wiring.cloud_spec(settings), new.public,
                                              on_event=steps.cloud_events(run))
        step.note(("registered the new key" if changed.registered else "the new key was registered already")
                  + ("; removed the old one" if changed.removed else ""))
        if changed.kept:
            run.warn(changed.kept)
        run.record("ssh_key_account", dataclasses.asdict(changed))


def _refused(run: Run, settings: Settings, edges: Edges, nodes: tuple[Node, ...]) -> None:
    with run.step("refused") as step:
        for node in nodes:
            try:
                _open(run, settings, edges, (node,)).close()
            except KeyRefused:
                continue
            raise OperatorError(f"{node.name} still lets the old key in after it was removed from "
                                f"~{settings.deploy_user}/.ssh/authorized_keys",
                                "the key is authorized another way (sshd's AuthorizedKeysFile, or another "
                                "user's keys): remove it there; the new key works")
        step.note(f"the old key is refused by {len(nodes)} node(s)")
