"""deploy.cloud.provision_cluster against the fake API through the real python-digitalocean
library: N droplets with one tag in one VPC, one firewall that opens the Swarm ports between
the nodes only, growing without replacing the live droplet, shrinking without deleting."""
from __future__ import annotations

import re

import pytest
import requests

from core.errors import EXIT_LOCKED
from deploy import cloud, hostkey
from deploy.cloud import CloudError
from deploy.redact import SecretRegistry
from lab.fake_do import FakeDigitalOcean
from tests.cloud.conftest import TOKEN, with_
from tests.cloud.test_concurrency import patient, race, together
from tests.cloud.test_contract import operation
from tests.fake_do.contract import contract_or_skip, off_spec
from tests.fake_do.helpers import RecordingBackend, ssh_allowed_from

TAG = "stack-1-swarm"
SWARM = {("tcp", "2377"), ("tcp", "7946"), ("udp", "7946"), ("udp", "4789")}


@pytest.fixture
def keys() -> dict[str, hostkey.HostKey]:
    return {}


@pytest.fixture
def key_for(keys):
    """Each node's own host key, as deploy.steps would generate, keep and pin it."""
    def make(name: str) -> hostkey.HostKey:
        keys[name] = hostkey.generate(SecretRegistry())
        return keys[name]
    return make


def cluster(spec, key_for, nodes: int, **kw) -> cloud.ClusterResult:
    return cloud.provision_cluster(with_(spec, nodes=nodes), host_key_for=key_for, **kw)


def writes(fake) -> list:
    return [r for r in fake.requests if r.is_write]


def the_firewall(fake) -> dict:
    [fw] = fake.state["firewalls"].values()
    return fw


def swarm_sources(rules: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["protocol"], r["ports"]): r["sources"] for r in rules if (r["protocol"], r["ports"]) in SWARM}


# --- pure ---------------------------------------------------------------------------------
def test_swarm_rules_admit_the_cluster_tag_and_no_address():
    rules = cloud.swarm_rules(TAG)
    assert {(r["protocol"], r["ports"]) for r in rules} == SWARM and len(rules) == 4
    assert all(r["sources"] == {"tags": [TAG]} for r in rules)


@pytest.mark.parametrize("name, tag", [("stack-1", "stack-1-swarm"), ("app.example.com", "app-example-com-swarm")])
def test_the_cluster_tag_is_in_digitaloceans_tag_alphabet(name, tag):
    assert cloud.cluster_tag(name) == tag
    assert re.fullmatch(r"[A-Za-z0-9_:-]{1,255}", cloud.cluster_tag("x" * 253))


def test_node_one_keeps_the_droplet_name():
    assert cloud.node_names("stack-1", 1) == ["stack-1"]
    assert cloud.node_names("stack-1", 3) == ["stack-1", "stack-1-2", "stack-1-3"]


# --- against the fake API ---------------------------------------------------------------------
def test_three_nodes_share_a_tag_a_vpc_and_a_firewall_that_opens_swarm_ports_between_them_only(
        fake, backend, spec, key_for, keys):
    fake.store.create_domain({"name": "example.test"})
    result = cluster(spec, key_for, 3)

    assert [n.name for n in result.nodes] == ["stack-1", "stack-1-2", "stack-1-3"]
    assert all(n.created and n.status == "active" and n.public_ipv4 == "127.0.0.1" for n in result.nodes)
    private = [n.private_ipv4 for n in result.nodes]
    assert None not in private and len(set(private)) == 3
    assert result.surplus == () and result.tag == TAG and result.changed and result.ssh_ready
    stored = {d["name"]: d for d in fake.state["droplets"].values()}
    assert {name: {"stackdeploy", TAG} <= set(d["tags"]) for name, d in stored.items()} == {
        "stack-1": True, "stack-1-2": True, "stack-1-3": True}
    [vpc] = requests.get(fake.base_url + "vpcs", headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=5).json()["vpcs"]
    assert {d["vpc_uuid"] for d in stored.values()} == {vpc["id"]} == {result.vpc_uuid}

    fw = the_firewall(fake)
    assert fw["name"] == "stack-1" and fw["tags"] == [TAG]       # attached by the tag: every node
    assert swarm_sources(fw["inbound_rules"]) == {port: {"tags": [TAG]} for port in SWARM}
    web = {r["ports"]: r["sources"] for r in fw["inbound_rules"] if r["ports"] in ("80", "443")}
    assert web == {"80": {"addresses": ["0.0.0.0/0"]}, "443": {"addresses": ["0.0.0.0/0"]}}
    assert result.firewall.status == "created" and swarm_sources(result.firewall.rules)
    for node in result.nodes:   # each machine got the rules, and who carries the tag (the lab enforces it)
        assert ssh_allowed_from(backend.rules_for(node.id)) == ["198.51.100.7/32", "203.0.113.0/24"]
        [*_, (_, rules, tagged)] = [c for c in backend.tagged if c[0] == node.id]
        assert swarm_sources(rules) and sorted(tagged[TAG]) == sorted(n.id for n in result.nodes)

    # each node boots with its own SSH host key; DNS points at node 1
    made = {c["name"]: c["user_data"] for c in backend.created}
    assert spec.host_key.public.split()[1] in made["stack-1"]
    for name in ("stack-1-2", "stack-1-3"):
        assert keys[name].public.split()[1] in made[name] and spec.host_key.public.split()[1] not in made[name]
    records = {r["name"]: r["data"] for r in fake.state["records"]["example.test"] if r["type"] == "A"}
    assert set(records.values()) == {result.nodes[0].public_ipv4} and len(records) == 3


def test_a_second_run_writes_nothing(fake, api_spec, key_for):
    first = cluster(api_spec, key_for, 3)
    fake.clear_requests()
    again = cluster(api_spec, key_for, 3)
    assert writes(fake) == [] and not again.changed
    assert [n.id for n in again.nodes] == [n.id for n in first.nodes] and not any(n.created for n in again.nodes)
    assert again.firewall.status == "unchanged" and again.vpc_uuid == first.vpc_uuid


def test_growing_from_one_droplet_keeps_it_and_its_firewall(fake, backend, api_spec, key_for):
    one = cloud.provision(api_spec)
    fw_id = next(iter(fake.state["firewalls"]))
    grown = cluster(api_spec, key_for, 3)

    assert grown.nodes[0].id == one.droplet.id and not grown.nodes[0].created
    assert [n.created for n in grown.nodes[1:]] == [True, True]
    live = fake.state["droplets"][str(one.droplet.id)]
    assert TAG in live["tags"] and {d["vpc_uuid"] for d in fake.state["droplets"].values()} == {live["vpc_uuid"]}
    fw = fake.state["firewalls"][fw_id]                 # the same firewall, rewritten once
    assert list(fake.state["firewalls"]) == [fw_id] and fw["tags"] == [TAG]
    assert fw["droplet_ids"] == [one.droplet.id]         # what attached it before stays
    assert swarm_sources(fw["inbound_rules"]) == {port: {"tags": [TAG]} for port in SWARM}
    assert grown.firewall.status == "updated"
    # node 1's machine now admits the new nodes on the Swarm ports
    [*_, (_, _, tagged)] = [c for c in backend.tagged if c[0] == one.droplet.id]
    assert sorted(tagged[TAG]) == sorted(n.id for n in grown.nodes)


def test_one_droplet_is_refused_on_a_swarms_node_one_before_anything_is_written(fake, api_spec, key_for):
    cluster(api_spec, key_for, 2)
    fake.clear_requests()
    for call in (cloud.provision, cloud.find_droplet, cloud.plan_provision):
        with pytest.raises(CloudError) as err:
            call(api_spec)                                  # NODES=1
        assert "node 1 of a Docker Swarm" in err.value.message and TAG in err.value.message
        assert "NODES" in err.value.hint and "docker swarm leave" in err.value.hint
    assert writes(fake) == []


def test_shrinking_deletes_nothing_and_names_the_surplus(fake, api_spec, key_for):
    three = cluster(api_spec, key_for, 3)
    fake.clear_requests()
    two = cluster(api_spec, key_for, 2)
    assert [n.name for n in two.nodes] == ["stack-1", "stack-1-2"]
    assert [(s.name, s.id) for s in two.surplus] == [("stack-1-3", three.nodes[2].id)]
    assert not [r for r in fake.requests if r.method == "DELETE" and r.path.startswith("/v2/droplets")]
    assert len(fake.state["droplets"]) == 3 and writes(fake) == []
    # still tagged, so still behind the firewall and reachable by the others until it is drained
    assert TAG in fake.state["droplets"][str(three.nodes[2].id)]["tags"]
    assert swarm_sources(the_firewall(fake)["inbound_rules"])


def test_the_surplus_is_deleted_by_id_and_nothing_else_is(fake, api_spec, key_for):
    three = cluster(api_spec, key_for, 3)
    two = with_(api_spec, nodes=2)
    assert [n.name for n in cloud.find_cluster(two)] == ["stack-1", "stack-1-2", "stack-1-3"]   # the count changed
    # a droplet of another deployment named like node 3 (no cluster tag) and node 2 passed by mistake
    stranger, _, _ = fake.store.create_droplet({"name": "stack-1-3", "region": "fra1", "size": "s-1vcpu-1gb",
                                                "image": "ubuntu-24-04-x64", "tags": ["stackdeploy"]})
    fake.clear_requests()
    assert cloud.delete_surplus(two, [three.nodes[1], three.nodes[2]]) == ["stack-1-3"]
    deletes = [r.path for r in fake.requests if r.method == "DELETE"]
    assert deletes == [f"/v2/droplets/{three.nodes[2].id}"]
    assert sorted(d["name"] for d in fake.state["droplets"].values()) == ["stack-1", "stack-1-2", "stack-1-3"]
    assert str(stranger["id"]) in fake.state["droplets"]
    assert [n.name for n in cloud.find_cluster(two)] == ["stack-1", "stack-1-2"]
    assert cloud.delete_surplus(two, [three.nodes[2]]) == []        # already gone: nothing to do


def test_the_plan_reads_the_cluster_with_get_requests_only(fake, api_spec, key_for):
    three = cluster(api_spec, key_for, 3)
    fake.clear_requests()
    smaller = cloud.plan_cluster(with_(api_spec, nodes=2))
    assert [(name, d.id if d else None) for name, d in smaller.nodes] == [
        ("stack-1", three.nodes[0].id), ("stack-1-2", three.nodes[1].id)]
    assert [d.name for d in smaller.surplus] == ["stack-1-3"] and smaller.changes
    larger = cloud.plan_cluster(with_(api_spec, nodes=4))
    assert [name for name, d in larger.nodes if d is None] == ["stack-1-4"] and larger.surplus == ()
    assert not cloud.plan_cluster(with_(api_spec, nodes=3)).changes
    assert fake.requests and writes(fake) == []


def test_one_node_sends_exactly_what_provision_sends(api_spec, key_for):
    def exchange(call) -> list[tuple]:
        api = FakeDigitalOcean(TOKEN, backend=RecordingBackend(ip="127.0.0.1"), operator_ip="198.51.100.7",
                               max_per_page=2)
        api.start()
        try:
            spec = with_(api_spec, endpoint=api.base_url, operator_ip_url=api.root_url + "/lab/my-ip")
            call(spec)
            call(spec)
            return [(r.method, re.sub(r"/\d+|/[0-9a-f-]{36}|/stackdeploy-ssh:[^/]+", "/{id}", r.path),
                     sorted(r.query), sorted(r.body) if isinstance(r.body, dict) else r.body)
                    for r in api.requests]
        finally:
            api.stop()
    assert exchange(cloud.provision) == exchange(lambda s: cloud.provision_cluster(s))


def test_a_droplet_named_like_a_node_without_the_cluster_tag_is_never_adopted(fake, api_spec, key_for):
    # e.g. another deployment whose DROPLET_NAME is stack-1-2, with the same configured tag
    fake.store.create_droplet({"name": "stack-1-2", "region": "fra1", "size": "s-1vcpu-1gb",
                               "image": "ubuntu-24-04-x64", "tags": ["stackdeploy"]})
    with pytest.raises(CloudError) as err:
        cluster(api_spec, key_for, 2)
    assert "stack-1-2" in err.value.message and TAG in err.value.message and TAG in err.value.hint
    assert [d["name"] for d in fake.state["droplets"].values()] == ["stack-1-2"]   # node 1 was not made either
    assert fake.state["firewalls"] == {}


def test_a_node_in_another_vpc_stops_the_run_before_anything_is_written(fake, api_spec, key_for):
    cloud.provision(api_spec)
    fake.store.create_droplet({"name": "stack-1-2", "region": "nyc1", "size": "s-1vcpu-1gb",
                               "image": "ubuntu-24-04-x64", "tags": [TAG, "stackdeploy"]})
    fake.clear_requests()
    with pytest.raises(CloudError, match="one VPC") as err:
        cluster(api_spec, key_for, 3)
    assert "stack-1-2" in err.value.message and TAG in err.value.hint
    assert writes(fake) == [] and len(fake.state["droplets"]) == 2


def test_without_host_keys_for_the_nodes_nothing_is_asked_of_the_api(fake, api_spec, key_for):
    with pytest.raises(CloudError, match="host keys"):
        cloud.provision_cluster(with_(api_spec, nodes=2))
    with pytest.raises(CloudError, match="0 droplets") as err:
        cluster(api_spec, key_for, 0)
    assert "1 or more" in err.value.hint
    assert fake.requests == []


def test_a_lost_answer_to_a_node_create_makes_no_duplicate(fake, api_spec, key_for):
    cloud.provision(api_spec)
    fake.inject("POST", r"^/v2/droplets$", 503, process=True)   # node 2 is made, its answer lost
    events: list[str] = []
    grown = cluster(api_spec, key_for, 2, on_event=lambda level, msg: events.append(msg))
    assert sorted(d["name"] for d in fake.state["droplets"].values()) == ["stack-1", "stack-1-2"]
    assert grown.nodes[1].name == "stack-1-2" and any("retry 1/" in e for e in events)


def test_two_deploys_adding_the_same_node_at_once_leave_one(fake, api_spec, key_for):
    cloud.provision(api_spec)
    together(fake, "GET", r"^/v2/account/keys/")   # both looked for node 2 (then the key): none yet
    slow = patient(api_spec)
    results = race(lambda: cluster(slow, key_for, 2), lambda: cluster(slow, key_for, 2))
    [won] = [r for r in results if isinstance(r, cloud.ClusterResult)]
    [lost] = [r for r in results if isinstance(r, CloudError)]
    assert lost.exit_code == EXIT_LOCKED and "another deploy created droplet stack-1-2 first" in lost.message
    nodes = sorted((d["name"], d["id"]) for d in fake.state["droplets"].values())
    assert nodes == sorted((n.name, n.id) for n in won.nodes)


def test_new_nodes_join_node_ones_vpc_even_when_it_is_not_the_default(fake, api_spec, key_for):
    own = fake.store.create_vpc("fra1", "stack-private", "10.120.0.0/20")
    fake.store.create_vpc("fra1", "default-fra1-elsewhere", "10.130.0.0/20")   # decoy
    made = requests.post(fake.base_url + "droplets", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5,
                         json={"name": "stack-1", "region": "fra1", "size": "s-2vcpu-4gb", "vpc_uuid": own["id"],
                               "image": "ubuntu-24-04-x64", "tags": ["stackdeploy"]})
    assert made.status_code == 202, made.text
    grown = cluster(api_spec, key_for, 3)
    assert grown.vpc_uuid == own["id"]
    assert {d["name"]: d["vpc_uuid"] for d in fake.state["droplets"].values()} == {
        "stack-1": own["id"], "stack-1-2": own["id"], "stack-1-3": own["id"]}


@pytest.fixture(scope="module")
def contract():
    return contract_or_skip()


def test_growing_reattaching_and_shrinking_are_on_spec(fake, api_spec, key_for, contract):
    cloud.provision(api_spec)
    cluster(api_spec, key_for, 3)                       # node 1 tagged, nodes created in its VPC
    fw_id = next(iter(fake.state["firewalls"]))
    fake.store.firewall_tags(fw_id, [TAG], add=False)   # someone detached the cluster
    again = cluster(api_spec, key_for, 2)               # re-attached by the tag; node 3 is surplus
    assert again.firewall.status == "updated" and [s.name for s in again.surplus] == ["stack-1-3"]
    assert fake.state["firewalls"][fw_id]["tags"] == [TAG]
    seen = {operation(r) for r in fake.requests}
    assert seen >= {"POST /v2/tags", "POST /v2/tags/{tag}/resources", "PUT /v2/firewalls/{id}",
                    "POST /v2/firewalls/{id}/tags", "POST /v2/droplets"}
    assert any(r.query.get("tag_name") == [TAG] for r in fake.requests if r.path == "/v2/droplets")
    assert any("vpc_uuid" in (r.body or {}) for r in fake.requests if (r.method, r.path) == ("POST", "/v2/droplets"))
    problems = off_spec(contract, fake.requests)
    assert not problems, f"{len(problems)} off-spec:\n" + "\n".join(problems)
