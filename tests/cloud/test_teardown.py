"""deploy.cloud.teardown (the cloud half of `inv destroy`) against the fake API through the real
python-digitalocean library, on an account that holds two stacks and a stranger's droplet."""
from __future__ import annotations

import itertools

import pytest
import requests

from deploy import cloud, hostkey
from deploy.redact import SecretRegistry
from lab.fake_do import FakeDigitalOcean
from tests.cloud.conftest import TOKEN, with_
from tests.fake_do.contract import contract_or_skip, off_spec
from tests.fake_do.helpers import RecordingBackend


class Addresses(RecordingBackend):
    """Each machine a loopback address of its own: two stacks' records point at different ones."""

    def __init__(self) -> None:
        super().__init__()
        self._next = itertools.count(2)

    def create(self, droplet_id, name, ssh_public_keys, user_data, tags, private_ip=None) -> str:
        super().create(droplet_id, name, ssh_public_keys, user_data, tags, private_ip)
        with self.lock:
            return f"127.0.0.{next(self._next)}"


@pytest.fixture
def backend() -> Addresses:
    return Addresses()


@pytest.fixture
def shop(api_spec) -> cloud.CloudSpec:
    """Stack A: a swarm of two, shop.example.test."""
    return with_(api_spec, droplet_name="shop", domain="shop.example.test", nodes=2, extra_ssh_cidrs=(),
                 operator="ann@laptop")


@pytest.fixture
def blog(api_spec) -> cloud.CloudSpec:
    """Stack B: one droplet, blog.example.test, deployed with the same SSH key by another operator."""
    return with_(api_spec, droplet_name="blog", domain="blog.example.test", extra_ssh_cidrs=(), operator="bob@desk")


def make_swarm(spec: cloud.CloudSpec) -> cloud.ClusterResult:
    return cloud.provision_cluster(spec, host_key_for=lambda name: hostkey.generate(SecretRegistry()))


def call(fake: FakeDigitalOcean, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, fake.base_url + path, headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=5, **kw)


def stranger(fake: FakeDigitalOcean, name: str, tags: list[str] = ()) -> int:
    """A droplet somebody made by hand in the control panel."""
    made = call(fake, "POST", "droplets", json={"name": name, "region": "fra1", "size": "s-1vcpu-1gb",
                                                "image": "ubuntu-24-04-x64", "tags": list(tags)})
    fake.wait_droplets_settled()
    return made.json()["droplet"]["id"]


def by_name(fake: FakeDigitalOcean) -> dict[str, dict]:
    return {d["name"]: d for d in fake.state["droplets"].values()}


def records(fake: FakeDigitalOcean) -> set[tuple[str, str]]:
    return {(r["name"], r["data"]) for r in fake.state["records"]["example.test"] if r["type"] == "A"}


def remove(spec: cloud.CloudSpec, include_data: bool = False, known: tuple[str, ...] = ()) -> cloud.StackInventory:
    found = cloud.stack_inventory(spec, known)
    cloud.remove_stack(spec, found.removals(include_data))
    return found


def test_destroy_removes_this_stacks_resources_and_every_resource_of_the_other_stays(fake, shop, blog):
    contract = contract_or_skip()
    fake.store.create_domain({"name": "example.test"})
    a = make_swarm(shop)
    b = cloud.provision(blog)
    a1, a2 = a.nodes
    # data: A's volume on node 1 and tagged with its cluster, a snapshot of node 1; B's likewise
    a_volume = fake.storage.create_volume({"name": "shop-pg", "size_gigabytes": 10, "region": "fra1",
                                           "droplet_ids": [a1.id], "tags": ["shop-swarm"]})
    a_snapshot = fake.storage.create_snapshot({"resource_type": "droplet", "resource_id": a1.id, "name": "shop-before"})
    b_volume = fake.storage.create_volume({"name": "blog-pg", "size_gigabytes": 10, "region": "fra1",
                                           "droplet_ids": [b.droplet.id]})
    b_snapshot = fake.storage.create_snapshot({"resource_type": "droplet", "resource_id": b.droplet.id,
                                               "name": "blog-before"})
    # a stranger's droplet with stack A's name but none of its tags, and a record A never wrote
    intruder = stranger(fake, "shop")
    fake.store.create_record("example.test", {"type": "A", "name": "mail.shop", "data": a1.public_ipv4})

    before = fake.state
    def presence(droplet_id: int) -> list[str]:
        return [t for t in before["droplets"][str(droplet_id)]["tags"] if t.startswith("stackdeploy-ssh:")]
    [a_presence], b_presence = presence(a1.id), presence(b.droplet.id)
    firewalls = {fw["name"]: fw for fw in before["firewalls"].values()}
    a_set = {"droplets": {a1.id, a2.id}, "firewall": firewalls["shop"]["id"],
             "records": {("shop", a1.public_ipv4), ("flower.shop", a1.public_ipv4), ("admin.shop", a1.public_ipv4)},
             "tags": {"shop-swarm", a_presence}}
    b_set = {"droplets": {b.droplet.id}, "firewall": firewalls["blog"]["id"],
             "records": {("blog", b.droplet.public_ipv4), ("flower.blog", b.droplet.public_ipv4),
                         ("admin.blog", b.droplet.public_ipv4)},
             "tags": {"stackdeploy", *b_presence}, "volume": b_volume["id"], "snapshot": b_snapshot["id"]}
    assert a_set["records"] | b_set["records"] | {("mail.shop", a1.public_ipv4)} == records(fake)

    found = cloud.stack_inventory(shop)
    assert [i.name for i in found.droplets] == ["shop", "shop-2"] and found.swarm
    assert {(i.kind, i.name) for i in found.removals(include_data=False)} == {
        ("dns", "shop.example.test"), ("dns", "flower.shop.example.test"), ("dns", "admin.shop.example.test"),
        ("droplet", "shop"), ("droplet", "shop-2"), ("firewall", "shop"), ("tag", a_presence)}
    assert [i.kind for i in found.removals(include_data=False)][:3] == ["dns"] * 3   # before the droplets go
    assert {(i.kind, i.name) for i in found.data} == {("volume", "shop-pg"), ("snapshot", "shop-before")}
    kept = {k.what: k.why for k in found.kept}
    assert "another's" in kept[f"droplet shop (id {intruder})"]
    assert "2 other droplet(s)" in next(why for what, why in kept.items() if what.startswith("SSH key"))

    cloud.remove_stack(shop, found.removals(include_data=False))

    after = fake.state
    left = {d["id"] for d in after["droplets"].values()}
    assert not a_set["droplets"] & left and b_set["droplets"] | {intruder} <= left
    assert set(after["firewalls"]) == {b_set["firewall"]} and a_set["firewall"] not in after["firewalls"]
    assert not a_set["records"] & records(fake)
    assert records(fake) == b_set["records"] | {("mail.shop", a1.public_ipv4)}
    assert a_set["tags"] & set(after["tags"]) == {"shop-swarm"}     # the kept volume carries it
    assert b_set["tags"] <= set(after["tags"])
    # every resource of stack B exactly as it was
    for kind, key in (("droplets", str(b.droplet.id)), ("firewalls", b_set["firewall"]),
                      ("volumes", b_set["volume"]), ("snapshots", b_set["snapshot"])):
        assert after[kind][key] == before[kind][key], kind
    assert after["ssh_keys"] == before["ssh_keys"]          # B's droplet may have been made with it
    # without --include-data A's data stays
    assert a_volume["id"] in after["volumes"] and a_snapshot["id"] in after["snapshots"]

    again = cloud.stack_inventory(shop)
    assert again.empty(include_data=False) and not again.droplets
    assert {i.name for i in again.data} == {"shop-pg"}      # found by its tag; the untagged snapshot is lost track of
    cloud.remove_stack(shop, again.removals(include_data=True))
    assert a_volume["id"] not in fake.state["volumes"] and "shop-swarm" not in fake.state["tags"]
    assert cloud.stack_inventory(shop).empty(include_data=True)
    assert fake.state["volumes"][b_set["volume"]] == before["volumes"][b_set["volume"]]

    problems = off_spec(contract, fake.requests)
    assert not problems, "\n".join(problems)


def test_a_stack_partly_gone_is_finished_and_dns_is_found_through_the_pinned_address(fake, shop):
    fake.store.create_domain({"name": "example.test"})
    a1, a2 = make_swarm(shop).nodes
    assert call(fake, "DELETE", f"droplets/{a1.id}").status_code == 204   # node 1 deleted by hand

    blind = cloud.stack_inventory(shop)
    assert [i.name for i in blind.droplets] == ["shop-2"]        # found by the cluster tag alone
    assert not blind.records and len([k for k in blind.kept if k.what.startswith("DNS A")]) == 3
    remove(shop, known=(a1.public_ipv4,))                         # known_hosts remembers node 1's address
    assert not records(fake) and not fake.state["firewalls"] and not by_name(fake)
    assert cloud.stack_inventory(shop, (a1.public_ipv4,)).empty(include_data=True)


def test_the_ssh_key_goes_with_the_last_droplet_and_never_one_registered_by_hand(fake, blog):
    cloud.provision(blog)
    found = remove(blog)
    assert [i.kind for i in found.keys] == ["ssh-key"] and not fake.state["ssh_keys"]

    call(fake, "POST", "account/keys", json={"name": "my laptop", "public_key": blog.ssh_public_key})
    cloud.provision(blog)                        # finds the key by its fingerprint: registers none
    found = remove(blog)
    assert not found.keys and any("another name" in k.why for k in found.kept)
    assert [k["name"] for k in fake.state["ssh_keys"].values()] == ["my laptop"]


def test_a_firewall_that_also_guards_a_strangers_droplet_stays(fake, blog):
    b = cloud.provision(blog)
    other = stranger(fake, "db")
    fw = next(iter(fake.state["firewalls"]))
    fake.store.firewall_droplets(fw, [other], add=True)
    found = remove(blog)
    assert not found.firewalls and any(f"droplet {other}" in k.why for k in found.kept)
    assert fake.state["firewalls"][fw]["droplet_ids"] == [other]
    assert str(b.droplet.id) not in fake.state["droplets"]
