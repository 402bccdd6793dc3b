"""The fake DigitalOcean API, driven through the real python-digitalocean library."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time

import digitalocean
import pytest
import requests

from lab.fake_do import FakeDigitalOcean
from tests.fake_do.helpers import TOKEN, RecordingBackend, ssh_allowed_from

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC4jrRa0yZJ6g+UZ+MjK3caPGp7kdFgadfOjU5smSsEk test"


def mgr() -> digitalocean.Manager:
    return digitalocean.Manager(token=TOKEN)


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def new_droplet(name: str, tags=("web",), **extra) -> digitalocean.Droplet:
    d = digitalocean.Droplet(token=TOKEN, name=name, region="fra1", size_slug="s-1vcpu-1gb",
                             image="ubuntu-24-04-x64", tags=list(tags), **extra)
    d.create()
    return d


def test_wrong_or_missing_token_gets_401_with_do_error_body(fake):
    with pytest.raises(digitalocean.DataReadError, match="Unable to authenticate you"):
        digitalocean.Manager(token="wrong").get_account()
    resp = requests.get(fake.base_url + "account", timeout=5)
    assert resp.status_code == 401
    assert resp.json() == {"id": "Unauthorized", "message": "Unable to authenticate you."}
    assert not fake.requests[-1].authorized


def test_request_log_holds_the_whole_exchange_but_never_the_token(fake):
    fake.add_response_hook(lambda method, path, status, payload: (
        {**payload, "extra": True} if path == "/v2/account" else payload))
    resp = requests.get(fake.base_url + "account/", params={"per_page": 5},
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    [record] = fake.requests
    assert (record.method, record.path, record.query, record.status) == (
        "GET", "/v2/account", {"per_page": ["5"]}, 200)
    assert record.headers["Authorization"] == "Bearer ***" and TOKEN not in repr(record)
    assert record.response_body == resp.content and resp.json()["extra"] is True
    assert record.response_headers["ratelimit-limit"] == resp.headers["ratelimit-limit"]
    digitalocean.SSHKey(token=TOKEN, name="op", public_key=KEY).create()
    assert json.loads(fake.requests[-1].raw_body) == {"name": "op", "public_key": KEY}


def test_account_and_ratelimit_headers(fake):
    assert mgr().get_account().email == "operator@example.test"
    resp = requests.get(fake.base_url + "account", headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=5)
    assert int(resp.headers["ratelimit-limit"]) >= int(resp.headers["ratelimit-remaining"]) > 0
    assert int(resp.headers["ratelimit-reset"]) > time.time()


def test_droplet_stays_new_until_backend_returns_then_gets_public_ip(fake, backend):
    backend.release.clear()
    key = digitalocean.SSHKey(token=TOKEN, name="op", public_key=KEY)
    key.create()
    d = new_droplet("web-1", ssh_keys=[key.id], user_data="#cloud-config\n")
    d.load()
    assert d.status == "new"
    assert [n["type"] for n in d.networks["v4"]] == ["private"]
    wait_until(lambda: backend.created)
    assert backend.created[0]["keys"] == [KEY]
    assert backend.created[0]["user_data"] == "#cloud-config\n"
    assert backend.created[0]["tags"] == ["web"]
    backend.release.set()
    wait_until(lambda: d.load().status == "active")
    # private first on purpose: consumers must choose type == "public"
    assert [n["type"] for n in d.networks["v4"]] == ["private", "public"]
    assert d.ip_address == "127.0.0.1"
    actions = d.get_actions()
    assert [(a.type, a.status) for a in actions] == [("create", "completed")]
    assert "user_data" not in requests.get(fake.base_url + f"droplets/{d.id}", timeout=5, headers={
        "Authorization": f"Bearer {TOKEN}"}).json()["droplet"]


def test_size_and_region_are_the_real_ones_for_their_slugs(fake):
    d = new_droplet("web-1")
    big = digitalocean.Droplet(token=TOKEN, name="web-2", region="nyc3", size_slug="s-2vcpu-4gb",
                               image="ubuntu-24-04-x64")
    big.create()
    small, large = d.load(), big.load()
    assert (small.memory, small.vcpus, small.disk) == (1024, 1, 25)
    assert (large.memory, large.vcpus, large.disk) == (4096, 2, 80)
    assert {k: large.size[k] for k in ("slug", "memory", "vcpus", "disk", "transfer")} == {
        "slug": "s-2vcpu-4gb", "memory": 4096, "vcpus": 2, "disk": 80, "transfer": 4.0}
    assert large.size["price_monthly"] > small.size["price_monthly"] > 0
    assert "nyc3" in large.size["regions"] and large.size["description"]
    assert (large.region["slug"], large.region["name"]) == ("nyc3", "New York 3")
    assert "s-2vcpu-4gb" in large.region["sizes"] and "ipv6" in large.region["features"]


def test_unknown_size_or_region_is_refused_like_digitalocean(fake):
    with pytest.raises(digitalocean.DataReadError, match="invalid size"):
        digitalocean.Droplet(token=TOKEN, name="x", region="fra1", size_slug="s-99vcpu-1tb",
                             image="ubuntu-24-04-x64").create()
    with pytest.raises(digitalocean.DataReadError, match="invalid region"):
        digitalocean.Droplet(token=TOKEN, name="x", region="mars1", size_slug="s-1vcpu-1gb",
                             image="ubuntu-24-04-x64").create()
    assert fake.state["droplets"] == {}


def test_ipv6_droplet_lists_a_public_v6_network_once_active(fake):
    v6 = new_droplet("web-6", ipv6=True)
    v4 = new_droplet("web-4")
    wait_until(lambda: v6.load().status == "active" and v4.load().status == "active")
    [net] = v6.networks["v6"]
    assert net["type"] == "public" and net["netmask"] == 64
    assert ipaddress.IPv6Address(net["ip_address"]) in ipaddress.IPv6Network(f"{net['gateway']}/64",
                                                                             strict=False)
    assert v6.ip_v6_address == net["ip_address"] and "ipv6" in v6.features
    assert v4.networks["v6"] == [] and "ipv6" not in v4.features


def test_list_paginates_and_filters_by_tag(fake):
    for i in range(5):
        new_droplet(f"web-{i}")
    new_droplet("db-0", tags=("db",))
    resp = requests.get(fake.base_url + "droplets", params={"tag_name": "web", "per_page": 200},
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
    assert len(resp["droplets"]) == 2 and resp["meta"]["total"] == 5  # max_per_page honoured
    assert "tag_name=web" in resp["links"]["pages"]["next"]
    names = sorted(d.name for d in mgr().get_all_droplets(tag_name="web"))
    assert names == [f"web-{i}" for i in range(5)]
    assert len(mgr().get_all_droplets()) == 6


def test_ssh_key_found_by_fingerprint_and_duplicates_refused(fake):
    key = digitalocean.SSHKey(token=TOKEN, name="op", public_key=KEY)
    key.create()
    fp = requests.get(fake.base_url + f"account/keys/{key.id}", timeout=5,
                      headers={"Authorization": f"Bearer {TOKEN}"}).json()["ssh_key"]["fingerprint"]
    by_fp = digitalocean.SSHKey(token=TOKEN, fingerprint=fp)
    by_fp.load()
    assert by_fp.id == key.id and by_fp.public_key == KEY
    with pytest.raises(digitalocean.DataReadError, match="already in use"):
        digitalocean.SSHKey(token=TOKEN, name="again", public_key=KEY).create()
    with pytest.raises(digitalocean.NotFoundError):
        digitalocean.SSHKey(token=TOKEN, fingerprint="00:" * 15 + "00").load()


def test_firewall_lifecycle_reaches_the_backend(fake, backend):
    d = new_droplet("web-1")
    wait_until(lambda: d.load().status == "active")
    fw = digitalocean.Firewall(
        token=TOKEN, name="web-1", droplet_ids=[d.id], tags=[],
        inbound_rules=[digitalocean.InboundRule("tcp", "22", digitalocean.Sources(addresses=["198.51.100.7/32"]))],
        outbound_rules=[digitalocean.OutboundRule("tcp", "all", digitalocean.Destinations(addresses=["0.0.0.0/0"]))])
    fw.create()
    assert ssh_allowed_from(backend.rules_for(d.id)) == ["198.51.100.7/32"]
    body = {"name": "web-1", "droplet_ids": [d.id], "tags": [], "outbound_rules": [],
            "inbound_rules": [{"protocol": "tcp", "ports": "22",
                               "sources": {"addresses": ["203.0.113.9/32"]}}]}
    fw.get_data(f"firewalls/{fw.id}", type="PUT", params=body)
    assert ssh_allowed_from(backend.rules_for(d.id)) == ["203.0.113.9/32"]
    assert digitalocean.Firewall.get_object(TOKEN, fw.id).inbound_rules[0].sources.addresses == ["203.0.113.9/32"]
    fw.remove_droplets([d.id])
    assert backend.rules_for(d.id) == []
    fw.add_droplets([d.id])
    assert ssh_allowed_from(backend.rules_for(d.id)) == ["203.0.113.9/32"]
    fw.destroy()
    assert backend.rules_for(d.id) == [] and mgr().get_all_firewalls() == []
    with pytest.raises(digitalocean.DataReadError, match="not an IP"):
        fw.get_data("firewalls", type="POST", params={"name": "x", "inbound_rules": [
            {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["nope"]}}]})


def test_firewall_keeps_every_documented_target_kind(fake):
    targets = {"addresses": ["203.0.113.0/24"], "droplet_ids": [], "tags": ["web"],
               "load_balancer_uids": ["4de7ac8b-495b-4884-9a69-1050c6793cd6"],
               "kubernetes_ids": ["bd5f5959-5e1e-4205-a714-a914373942af"]}
    digitalocean.Tag(token=TOKEN, name="web").create()   # a tag must exist to be referenced
    made = mgr().get_data("firewalls", type="POST", params={"name": "fw", "inbound_rules": [
        {"protocol": "tcp", "ports": "443", "sources": targets}]})
    # empty lists are left out, as the real API echoes them
    assert made["firewall"]["inbound_rules"][0]["sources"] == {
        k: v for k, v in targets.items() if v}


def test_deleting_a_droplet_calls_backend_and_detaches_firewalls(fake, backend):
    d = new_droplet("web-1")
    wait_until(lambda: d.load().status == "active")
    fw = digitalocean.Firewall(token=TOKEN, name="fw", droplet_ids=[d.id], tags=[],
                               inbound_rules=[], outbound_rules=[])
    fw.create()
    d.destroy()
    wait_until(lambda: backend.deleted == [d.id])
    assert digitalocean.Firewall.get_object(TOKEN, fw.id).droplet_ids == []
    with pytest.raises(digitalocean.NotFoundError):
        d.load()


def test_domains_and_records(fake):
    digitalocean.Domain(token=TOKEN, name="example.test", ip_address="192.0.2.10").create()
    dom = mgr().get_domain("example.test")
    assert dom.ttl == 1800
    records = dom.get_records()
    assert {(r.type, r.name) for r in records} >= {("NS", "@"), ("A", "@")}
    created = dom.create_new_domain_record(type="A", name="app", data="192.0.2.20")
    rec_id = created["domain_record"]["id"]
    rec = digitalocean.Record.get_object(TOKEN, "example.test", rec_id)
    rec.data = "192.0.2.21"
    rec.save()
    assert digitalocean.Record.get_object(TOKEN, "example.test", rec_id).data == "192.0.2.21"
    with pytest.raises(digitalocean.DataReadError, match="not an IP"):
        dom.create_new_domain_record(type="A", name="bad", data="not-an-ip")
    rec.destroy()
    assert rec_id not in [r.id for r in dom.get_records()]
    assert [d.name for d in mgr().get_all_domains()] == ["example.test"]


def test_tags(fake):
    d = new_droplet("web-1", tags=())
    tag = digitalocean.Tag(token=TOKEN, name="blue")
    tag.create()
    tag.add_droplets([str(d.id)])
    assert mgr().get_all_droplets(tag_name="blue")[0].id == d.id
    assert "blue" in [t.name for t in mgr().get_all_tags()]


def test_fault_injection_statuses_delay_and_counts(fake):
    fault = fake.inject("GET", r"^/v2/account$", 429, times=2, retry_after=3)
    for _ in range(2):
        resp = requests.get(fake.base_url + "account", timeout=5,
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "3"
        assert resp.json()["id"] == "too_many_requests"
    assert mgr().get_account().email  # third call is served normally
    assert fault.hits == 2
    fake.inject("*", r"/droplets", 503, times=1)
    with pytest.raises(digitalocean.DataReadError, match="temporarily unavailable"):
        mgr().get_all_droplets()
    fake.inject("GET", r"/account", None, times=1, delay=0.4)
    started = time.monotonic()
    mgr().get_account()
    assert time.monotonic() - started >= 0.4
    assert [r.status for r in fake.requests if r.path == "/v2/droplets"] == [503]


def test_my_ip_needs_no_token(fake):
    resp = requests.get(fake.root_url + "/lab/my-ip", timeout=5)
    assert resp.text.strip() == "198.51.100.7"
    fake.operator_ip = "203.0.113.5"
    assert requests.get(fake.root_url + "/lab/my-ip", timeout=5).text.strip() == "203.0.113.5"


def test_state_file_survives_a_restart(tmp_path, monkeypatch):
    state = tmp_path / "state.json"
    first = FakeDigitalOcean(TOKEN, backend=RecordingBackend(), state_file=str(state))
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", first.start())
    d = new_droplet("keep-me")
    wait_until(lambda: d.load().status == "active")
    digitalocean.Domain(token=TOKEN, name="example.test").create()
    first.stop()
    assert TOKEN not in state.read_text()
    second = FakeDigitalOcean(TOKEN, backend=RecordingBackend(), state_file=str(state))
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", second.start())
    try:
        again = mgr().get_all_droplets()
        assert [(x.name, x.status, x.ip_address) for x in again] == [("keep-me", "active", "127.0.0.1")]
        assert [x.name for x in mgr().get_all_domains()] == ["example.test"]
        assert new_droplet("next").id > d.id  # ids keep counting
    finally:
        second.stop()


def test_process_entry_serves_until_terminated(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.fake_do", "--port", "0", "--token", TOKEN,
         "--operator-ip", "198.51.100.9", "--state-file", str(tmp_path / "s.json"),
         "--backend-factory", "lab.fake_do.backend:NullBackend"],
        stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v2/")
        resp = requests.get(url + "account", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert resp.json()["account"]["status"] == "active"
        assert requests.get(url.replace("/v2/", "/lab/my-ip"), timeout=5).text.strip() == "198.51.100.9"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_bad_backend_factory_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "lab.fake_do", "--token", "t",
                          "--backend-factory", "nope"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "module:callable" in out.stderr
    assert "Traceback" not in out.stderr


def test_each_droplet_gets_its_own_vpc_address_and_the_machine_is_made_with_it(fake, backend):
    """Swarm nodes talk over their private addresses: the machine must really hold the address
    the API reports, and two live droplets never share one."""
    first, second = new_droplet("node-1"), new_droplet("node-2")
    wait_until(lambda: len(backend.created) == 2)
    reported = {}
    for d in (first, second):
        wait_until(lambda d=d: d.load().status == "active")
        reported[d.id] = [n["ip_address"] for n in d.networks["v4"] if n["type"] == "private"][0]
    made = {c["id"]: c["private_ip"] for c in backend.created}
    assert made == reported
    assert len(set(reported.values())) == 2
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(backend.vpc_range) for ip in reported.values())
