"""`inv rotate-ssh-key`'s account half against the DigitalOcean stand-in (real HTTP): the new
key is registered before the old one leaves; a key registered by hand stays."""
from __future__ import annotations

from deploy import cloud
from tests.cloud.conftest import KEY, with_
from tests.cloud.test_teardown import call

NEW = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQwQJx8nGf1t3XQ5bC8r6xXW1cQmZ3c3qzVb0TQpQe7 op@new-laptop"


def _keys(fake) -> dict[str, str]:
    return {k["public_key"].split()[1]: k["name"] for k in fake.state["ssh_keys"].values()}


def test_the_new_key_is_registered_then_the_deploys_old_key_removed(fake, api_spec):
    call(fake, "POST", "account/keys", json={"name": api_spec.ssh_key_name, "public_key": KEY})
    changed = cloud.replace_ssh_key(api_spec, NEW)
    assert changed == cloud.KeyChange(registered=True, removed=True)
    assert _keys(fake) == {NEW.split()[1]: api_spec.ssh_key_name}
    # run again (a rotation cut short after this step): nothing left to do, nothing fails
    assert cloud.replace_ssh_key(api_spec, NEW) == cloud.KeyChange(registered=False, removed=False)
    # the order: the POST of the new key came before the DELETE of the old one
    writes = [(r.method, r.path) for r in fake.requests if r.method in ("POST", "DELETE")]
    assert [m for m, p in writes if "account/keys" in p][-2:] == ["POST", "DELETE"]


def test_an_old_key_registered_by_hand_stays_and_the_reason_is_given(fake, api_spec):
    call(fake, "POST", "account/keys", json={"name": "my laptop", "public_key": KEY})
    changed = cloud.replace_ssh_key(with_(api_spec), NEW)
    assert changed.registered and not changed.removed and "'my laptop'" in changed.kept
    assert _keys(fake) == {KEY.split()[1]: "my laptop", NEW.split()[1]: api_spec.ssh_key_name}
