"""What a cluster needs of the fake API, as DigitalOcean's contract says: one default VPC per
region (GET /v2/vpcs), firewall rules whose sources are tags, droplets listed by tag, and the
machines' firewalls following the droplets that carry a tag."""
from __future__ import annotations

import time

import digitalocean
import pytest
import requests

from lab.fake_do import FakeDigitalOcean
from tests.fake_do.contract import contract_or_skip, off_spec
from tests.fake_do.helpers import TOKEN, RecordingBackend

SWARM = [{"protocol": "tcp", "ports": "2377", "sources": {"tags": ["stack-swarm"]}},
         {"protocol": "udp", "ports": "4789", "sources": {"tags": ["stack-swarm"]}}]


@pytest.fixture(scope="module")
def contract():
    return contract_or_skip()


def get(fake, path: str) -> requests.Response:
    return requests.get(fake.base_url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)


def post(fake, path: str, body: dict) -> requests.Response:
    return requests.post(fake.base_url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=5)


def create(fake, name: str, region: str = "fra1", tags=("stack",), **extra) -> dict:
    resp = post(fake, "droplets", {"name": name, "region": region, "size": "s-1vcpu-1gb",
                                   "image": "ubuntu-24-04-x64", "tags": list(tags), **extra})
    assert resp.status_code == 202, resp.text
    return resp.json()["droplet"]


def wait_active(fake, *ids: int) -> None:
    deadline = time.monotonic() + 5
    while any(fake.state["droplets"][str(i)]["status"] != "active" for i in ids):
        assert time.monotonic() < deadline, "droplets never became active"
        time.sleep(0.02)


def all_vpcs(fake) -> list[dict]:
    """Every VPC, page after page (the fake pages by 2 here)."""
    out, url = [], "vpcs"
    while url:
        page = get(fake, url).json()
        out += page["vpcs"]
        url = ((page.get("links") or {}).get("pages") or {}).get("next", "").replace(fake.base_url, "")
    return out


# --- VPCs ---------------------------------------------------------------------------------
def test_droplets_made_without_a_vpc_share_their_regions_default_vpc(fake, contract):
    a, b = create(fake, "node-1"), create(fake, "node-2")
    other = create(fake, "far-1", region="nyc1")
    assert a["vpc_uuid"] == b["vpc_uuid"] != other["vpc_uuid"]
    vpcs = {v["id"]: v for v in all_vpcs(fake)}
    assert set(vpcs) == {a["vpc_uuid"], other["vpc_uuid"]}
    assert (vpcs[a["vpc_uuid"]]["region"], vpcs[a["vpc_uuid"]]["default"]) == ("fra1", True)
    assert (vpcs[other["vpc_uuid"]]["region"], vpcs[other["vpc_uuid"]]["default"]) == ("nyc1", True)
    assert get(fake, f"vpcs/{a['vpc_uuid']}").json()["vpc"] == vpcs[a["vpc_uuid"]]
    # the uuid stays the droplet's: listed, loaded one by one, and after the machine is built
    wait_active(fake, a["id"], b["id"])
    assert {d["vpc_uuid"] for d in get(fake, "droplets?tag_name=stack&per_page=10").json()["droplets"]
            if d["region"]["slug"] == "fra1"} == {a["vpc_uuid"]}
    assert get(fake, f"droplets/{b['id']}").json()["droplet"]["vpc_uuid"] == a["vpc_uuid"]
    problems = off_spec(contract, fake.requests)
    assert not problems, "\n".join(problems)


def test_no_vpc_is_listed_before_a_region_is_used(fake):
    assert get(fake, "vpcs").json()["vpcs"] == []


def test_a_droplet_joins_the_vpc_it_names(fake):
    first = create(fake, "node-1")
    second = create(fake, "node-2", vpc_uuid=first["vpc_uuid"])
    assert second["vpc_uuid"] == first["vpc_uuid"]


@pytest.mark.parametrize("region, vpc, message", [
    ("fra1", "5a4981aa-9653-4bd1-bef5-d6bff52042e4", "no VPC"),
    ("nyc1", None, "is in region fra1"),
])
def test_a_vpc_that_does_not_exist_or_is_elsewhere_is_refused(fake, region, vpc, message):
    fra = create(fake, "node-1")
    resp = post(fake, "droplets", {"name": "node-2", "region": region, "size": "s-1vcpu-1gb",
                                   "image": "ubuntu-24-04-x64", "vpc_uuid": vpc or fra["vpc_uuid"]})
    assert resp.status_code == 422 and message in resp.json()["message"]
    assert [d["name"] for d in fake.state["droplets"].values()] == ["node-1"]


def test_an_unknown_vpc_is_404(fake):
    resp = get(fake, "vpcs/5a4981aa-9653-4bd1-bef5-d6bff52042e4")
    assert resp.status_code == 404 and resp.json()["id"] == "not_found"


def test_a_state_file_from_before_vpcs_still_loads(tmp_path, backend):
    # a lab started before the fake knew VPCs keeps its state file: it must still serve
    state = tmp_path / "state.json"
    old = FakeDigitalOcean(TOKEN, backend=backend, state_file=str(state))
    old.store.data.pop("vpcs", None)
    old._save_state()
    again = FakeDigitalOcean(TOKEN, backend=backend, state_file=str(state))
    again.start()
    try:
        assert get(again, "vpcs").json()["vpcs"] == []
        assert create(again, "node-1")["vpc_uuid"] == get(again, "vpcs").json()["vpcs"][0]["id"]
    finally:
        again.stop()


# --- firewall rules whose sources are tags --------------------------------------------------
def firewall(fake, inbound: list[dict], **extra) -> requests.Response:
    return post(fake, "firewalls", {"name": "stack", "inbound_rules": inbound, **extra})


def test_a_rule_naming_a_tag_that_does_not_exist_is_refused(fake):
    # the contract: "Tag names must exist in order to be referenced in a request"
    resp = firewall(fake, SWARM)
    assert resp.status_code == 422 and "stack-swarm" in resp.json()["message"]
    assert fake.state["firewalls"] == {}
    resp = firewall(fake, [], tags=["nobody"])
    assert resp.status_code == 422 and "nobody" in resp.json()["message"]


def test_tag_sources_are_kept_and_listed_by_tag(fake, contract):
    node = create(fake, "node-1", tags=("stack", "stack-swarm"))
    create(fake, "other-1", tags=("stack",))
    resp = firewall(fake, SWARM, tags=["stack-swarm"])
    assert resp.status_code == 202, resp.text
    assert [r["sources"] for r in resp.json()["firewall"]["inbound_rules"]] == [
        {"tags": ["stack-swarm"]}, {"tags": ["stack-swarm"]}]
    listed = digitalocean.Manager(token=TOKEN).get_all_droplets(tag_name="stack-swarm")
    assert [d.id for d in listed] == [node["id"]]
    problems = off_spec(contract, fake.requests)
    assert not problems, "\n".join(problems)


def members_seen(backend: RecordingBackend, droplet_id: int) -> list[int] | None:
    """The droplets the machine ``droplet_id`` was last told carry the swarm tag."""
    with backend.lock:
        calls = [tagged for did, _, tagged in backend.tagged if did == droplet_id]
    return sorted(calls[-1].get("stack-swarm", [])) if calls else None


def test_machines_learn_who_carries_a_tag_as_droplets_come_and_go(fake, backend):
    a = create(fake, "node-1", tags=("stack-swarm",))
    wait_active(fake, a["id"])
    assert firewall(fake, SWARM, tags=["stack-swarm"]).status_code == 202
    assert members_seen(backend, a["id"]) == [a["id"]]

    b = create(fake, "node-2", tags=("stack-swarm",))
    wait_active(fake, b["id"])
    # node-1's firewall was written again: node-2 may now reach it on the swarm ports
    assert members_seen(backend, a["id"]) == members_seen(backend, b["id"]) == [a["id"], b["id"]]

    c = create(fake, "loner", tags=())
    wait_active(fake, c["id"])
    digitalocean.Tag(token=TOKEN, name="stack-swarm").add_droplets([c["id"]])
    assert members_seen(backend, a["id"]) == [a["id"], b["id"], c["id"]]
    digitalocean.Tag(token=TOKEN, name="stack-swarm").remove_droplets([c["id"]])
    assert members_seen(backend, a["id"]) == [a["id"], b["id"]]

    digitalocean.Droplet(token=TOKEN, id=b["id"]).destroy()
    assert members_seen(backend, a["id"]) == [a["id"]]
