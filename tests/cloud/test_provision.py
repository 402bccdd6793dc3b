"""deploy.cloud against the fake API through the real python-digitalocean library."""
from __future__ import annotations

import logging
import os
import time

import pytest

from deploy import cloud
from deploy.cloud import CloudError, CloudUnavailable, TokenMissing, TokenRejected
from lab.ports import free_port
from tests.cloud.conftest import TOKEN, with_
from tests.fake_do.helpers import ssh_allowed_from


def writes(fake) -> list:
    return [r for r in fake.requests if r.is_write]


def a_records(fake, zone: str) -> dict[str, str]:
    return {r["name"]: r["data"] for r in fake.state["records"][zone] if r["type"] == "A"}


def add_zone(fake, name: str) -> None:
    fake.store.create_domain({"name": name})


def test_first_run_creates_droplet_firewall_and_dns(fake, backend, spec):
    add_zone(fake, "example.test")
    events: list[tuple[str, str]] = []
    result = cloud.provision(spec, on_event=lambda lvl, msg: events.append((lvl, msg)))

    assert result.changed and result.droplet.created and result.ssh_ready
    assert result.ssh_key_registered
    d = result.droplet
    assert (d.name, d.region, d.size, d.status) == ("stack-1", "fra1", "s-2vcpu-4gb", "active")
    # the fake lists the private address first: the adapter must pick type == "public"
    stored = fake.state["droplets"][str(d.id)]
    assert stored["networks"]["v4"][0]["type"] == "private"
    assert d.public_ipv4 == "127.0.0.1"
    made = backend.created[0]
    assert made["keys"] == [spec.ssh_public_key] and made["tags"][0] == "stackdeploy"
    [announced] = made["tags"][1:]            # its creator, allowed to SSH (see test_concurrency.py)
    assert cloud.parse_presence(announced).address == "198.51.100.7"
    assert made["user_data"].startswith("#cloud-config") and "deploy" in made["user_data"]
    assert stored["image"]["slug"] == "ubuntu-24-04-x64"

    assert result.firewall.status == "created" and result.firewall.operator_ip == "198.51.100.7"
    [fw] = fake.state["firewalls"].values()
    assert fw["name"] == "stack-1" and fw["droplet_ids"] == [d.id]
    assert ssh_allowed_from(backend.rules_for(d.id)) == ["198.51.100.7/32", "203.0.113.0/24"]
    web = {r["ports"]: r["sources"]["addresses"] for r in fw["inbound_rules"]}
    assert web["80"] == web["443"] == ["0.0.0.0/0"]   # IPv6 is off: no ::/0 (docs/security.md)
    assert {r["protocol"] for r in fw["outbound_rules"]} == {"tcp", "udp", "icmp"}

    assert result.dns.status == "managed"
    assert a_records(fake, "example.test") == {"app": "127.0.0.1", "flower.app": "127.0.0.1",
                                               "admin.app": "127.0.0.1"}
    assert {c["action"] for c in result.dns.records_changed} == {"created"}
    assert result.warnings == []
    assert any("created droplet stack-1" in m for _, m in events)
    assert TOKEN not in repr(result) and TOKEN not in repr(spec)


def test_create_request_sends_no_null_fields(fake, api_spec):
    # python-digitalocean's Droplet.create() always sends "vpc_uuid": null, which DigitalOcean's
    # contract forbids (tests/cloud/test_contract.py checks the whole exchange)
    cloud.provision(api_spec)
    [create] = [r.body for r in fake.requests if (r.method, r.path) == ("POST", "/v2/droplets")]
    assert None not in create.values()
    assert (create["name"], create["region"], create["size"], create["ipv6"]) == (
        "stack-1", "fra1", "s-2vcpu-4gb", False)


def test_second_run_changes_nothing(fake, spec):
    add_zone(fake, "example.test")
    cloud.provision(spec)
    fake.clear_requests()
    again = cloud.provision(spec)
    assert not again.changed and not again.droplet.created
    assert again.firewall.status == "unchanged" and again.dns.records_changed == []
    assert writes(fake) == []
    assert len(fake.state["droplets"]) == 1


def test_operator_ip_change_updates_the_firewall_only(fake, backend, spec):
    first = cloud.provision(spec)
    fake.operator_ip = "192.0.2.44"
    fake.clear_requests()
    second = cloud.provision(spec)
    assert second.firewall.status == "updated" and second.firewall.operator_ip == "192.0.2.44"
    assert second.changed
    assert [(r.method, r.path) for r in writes(fake) if "firewalls" in r.path] == [
        ("PUT", f"/v2/firewalls/{next(iter(fake.state['firewalls']))}")]
    assert ssh_allowed_from(backend.rules_for(first.droplet.id)) == ["192.0.2.44/32", "203.0.113.0/24"]
    # the operator's announcement moved to the new address: the old one is gone from the droplet
    announced = [cloud.parse_presence(t) for t in fake.state["droplets"][str(first.droplet.id)]["tags"]]
    assert [p.address for p in announced if p] == ["192.0.2.44"]


def test_detached_firewall_is_reattached(fake, spec):
    first = cloud.provision(spec)
    fw_id = next(iter(fake.state["firewalls"]))
    fake.store.firewall_droplets(fw_id, [first.droplet.id], add=False)
    again = cloud.provision(spec)
    assert again.firewall.status == "updated"
    assert fake.state["firewalls"][fw_id]["droplet_ids"] == [first.droplet.id]


@pytest.mark.parametrize("kind, target", [
    ("load_balancer_uids", "4de7ac8b-495b-4884-9a69-1050c6793cd6"),
    ("kubernetes_ids", "bd5f5959-5e1e-4205-a714-a914373942af")])
def test_firewall_admitting_other_sources_is_restored(fake, api_spec, kind, target):
    # Every documented source kind counts: SSH opened to a load balancer or a cluster is a change.
    cloud.provision(api_spec)
    fw_id = next(iter(fake.state["firewalls"]))
    ssh = next(r for r in fake.store.firewall(fw_id)["inbound_rules"] if r["ports"] == "22")
    ssh["sources"][kind] = [target]
    again = cloud.provision(api_spec)
    assert again.firewall.status == "updated"
    rules = fake.state["firewalls"][fw_id]["inbound_rules"]
    assert not any(kind in r["sources"] for r in rules)


def test_web_open_to_ipv6_from_an_older_release_is_closed(fake, api_spec):
    # Older releases opened 80/443 to ::/0; IPv6 is off now (no half state): the rule is restored.
    cloud.provision(api_spec)
    fw_id = next(iter(fake.state["firewalls"]))
    for rule in fake.store.firewall(fw_id)["inbound_rules"]:
        if rule["ports"] in ("80", "443"):
            rule["sources"]["addresses"] = ["0.0.0.0/0", "::/0"]
    again = cloud.provision(api_spec)
    assert again.firewall.status == "updated"
    web = {r["ports"]: r["sources"]["addresses"] for r in fake.state["firewalls"][fw_id]["inbound_rules"]}
    assert web["80"] == web["443"] == ["0.0.0.0/0"]


def test_wrong_dns_records_are_fixed_and_others_left_alone(fake, spec):
    add_zone(fake, "example.test")
    wrong = fake.store.create_record("example.test", {"type": "A", "name": "app", "data": "192.0.2.99"})
    other = fake.store.create_record("example.test", {"type": "A", "name": "www", "data": "192.0.2.50"})
    txt = fake.store.create_record("example.test", {"type": "TXT", "name": "app", "data": "v=spf1 -all"})
    result = cloud.provision(spec)
    assert {"name": "app.example.test", "action": "updated", "from": "192.0.2.99",
            "to": "127.0.0.1"} in result.dns.records_changed
    recs = {r["id"]: r for r in fake.state["records"]["example.test"]}
    assert recs[wrong["id"]]["data"] == "127.0.0.1"
    assert recs[other["id"]]["data"] == "192.0.2.50" and recs[txt["id"]]["data"] == "v=spf1 -all"


def test_longest_managed_zone_wins(fake, spec):
    add_zone(fake, "example.test")
    add_zone(fake, "app.example.test")
    cloud.provision(spec)
    assert a_records(fake, "app.example.test") == {"@": "127.0.0.1", "flower": "127.0.0.1",
                                                   "admin": "127.0.0.1"}
    assert a_records(fake, "example.test") == {}


def test_unmanaged_domain_is_a_warning(fake, spec):
    add_zone(fake, "other.test")
    result = cloud.provision(spec)
    assert result.dns.status == "unmanaged"
    assert "app.example.test" in result.dns.warning and "127.0.0.1" in result.dns.warning
    assert result.dns.warning in result.warnings
    assert not any(r.path.startswith("/v2/domains/") for r in fake.requests)


def test_skip_flag_leaves_the_firewall_alone(fake, spec):
    result = cloud.provision(with_(spec, firewall_enabled=False, domain=None))
    assert result.firewall.status == "skipped" and result.firewall.operator_ip is None
    assert fake.state["firewalls"] == {}
    assert not any("firewalls" in r.path or "my-ip" in r.path for r in fake.requests)
    assert result.dns.status == "skipped"


def test_existing_ssh_key_is_reused_by_fingerprint(fake, spec):
    fake.store.create_key({"name": "mine", "public_key": spec.ssh_public_key})
    result = cloud.provision(spec)
    assert not result.ssh_key_registered
    assert len(fake.state["ssh_keys"]) == 1


def test_missing_token_fails_fast_without_calling_the_api(fake, spec):
    started = time.monotonic()
    with pytest.raises(TokenMissing) as err:
        cloud.provision(with_(spec, token="  "))
    assert time.monotonic() - started < 5
    assert "DIGITALOCEAN_TOKEN" in str(err.value) and err.value.hint
    assert fake.requests == []


def test_rejected_token_fails_fast_with_a_clear_message(fake, spec):
    bad = "dop_v1_revoked_token_that_must_not_leak_0000"
    started = time.monotonic()
    with pytest.raises(TokenRejected) as err:
        cloud.provision(with_(spec, token=bad))
    assert time.monotonic() - started < 5
    assert "rejected" in str(err.value) and "DIGITALOCEAN_TOKEN" in str(err.value)
    assert bad not in str(err.value) and bad not in repr(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert [r.path for r in fake.requests] == ["/v2/account"]  # nothing after the check
    assert fake.state["droplets"] == {}


def test_token_never_logged(fake, spec, caplog):
    caplog.set_level(logging.DEBUG)
    fake.inject("GET", r"/v2/droplets$", 503, times=1)
    cloud.provision(spec)
    assert caplog.records and TOKEN not in caplog.text


def test_rate_limit_and_unavailable_are_retried(fake, spec):
    fake.inject("GET", r"^/v2/account$", 429, times=2, retry_after=0)
    fake.inject("GET", r"^/v2/droplets$", 503, times=1)
    events: list[tuple[str, str]] = []
    result = cloud.provision(spec, on_event=lambda lvl, msg: events.append((lvl, msg)))
    assert result.droplet.created
    assert [r.status for r in fake.requests if r.path == "/v2/account"] == [429, 429, 200]
    assert sum(1 for lvl, m in events if lvl == "warning" and "retry" in m) == 3


def test_retry_after_is_honoured(fake, spec):
    fake.inject("GET", r"^/v2/account$", 429, times=1, retry_after=0.6)
    started = time.monotonic()
    cloud.check_token(spec)
    assert time.monotonic() - started >= 0.6


def test_slow_api_times_out_and_is_retried(fake, spec):
    slow = fake.inject("GET", r"^/v2/account$", None, times=1, delay=1.0)
    events: list[tuple[str, str]] = []
    info = cloud.check_token(with_(spec, request_timeout=0.3), lambda *e: events.append(e))
    assert info.email == "operator@example.test"
    assert slow.hits == 1  # the second request was not delayed and answered
    assert [lvl for lvl, m in events if "ReadTimeout" in m and "retry 1/3" in m] == ["warning"]


def test_persistent_server_error_gives_up_after_bounded_attempts(fake, spec):
    fake.inject("*", r"^/v2/account$", 500, times=-1)
    started = time.monotonic()
    with pytest.raises(CloudUnavailable) as err:
        cloud.check_token(spec)
    assert time.monotonic() - started < 5
    assert len(fake.requests) == spec.max_retries + 1
    assert "HTTP 500" in str(err.value) and "4 attempts" in str(err.value)
    assert TOKEN not in str(err.value)


def test_ratelimit_reset_is_honoured_without_retry_after(fake, spec):
    fake.inject("GET", r"^/v2/account$", 429, times=1)  # only ratelimit-reset, about 1 s ahead
    started = time.monotonic()
    cloud.check_token(spec)
    assert time.monotonic() - started >= 0.9


def test_unreachable_api_fails_the_token_check_quickly(spec):
    dead = f"http://127.0.0.1:{free_port()}/v2/"
    started = time.monotonic()
    with pytest.raises(CloudUnavailable) as err:
        cloud.check_token(with_(spec, endpoint=dead, retry_base_delay=0.5, max_retries=10,
                                retry_max_total=600))
    assert time.monotonic() - started < 6
    assert "ConnectionError" in str(err.value)


def test_powered_off_droplet_is_reported_at_once(fake, spec):
    made = cloud.provision(spec).droplet
    fake.store.droplet(made.id)["status"] = "off"
    started = time.monotonic()
    with pytest.raises(CloudError, match="(?s)'off'.*power it on"):
        cloud.provision(spec)
    assert time.monotonic() - started < 2


def test_retry_budget_bounds_total_time(fake, spec):
    fake.inject("*", r"^/v2/account$", 429, times=-1, retry_after=30)
    started = time.monotonic()
    with pytest.raises(CloudUnavailable):
        cloud.check_token(spec)
    assert time.monotonic() - started < 2  # a 30 s wait exceeds the 10 s budget: give up now


def test_create_whose_answer_was_lost_is_not_duplicated(fake, spec):
    # The fake creates the droplet, then answers 500: the adapter looks before re-posting.
    fake.inject("POST", r"^/v2/droplets$", 500, times=1, process=True)
    result = cloud.provision(spec)
    assert len(fake.state["droplets"]) == 1 and result.droplet.created
    assert [r.status for r in fake.requests if r.method == "POST" and r.path == "/v2/droplets"] == [500]


def test_refused_request_is_not_retried_and_explains(fake, spec):
    with pytest.raises(CloudError) as err:
        cloud.provision(with_(spec, droplet_name="bad_name!"))
    assert not isinstance(err.value, CloudUnavailable)
    assert "valid hostname characters" in str(err.value) and "HTTP 422" in str(err.value)
    assert len([r for r in fake.requests if r.method == "POST" and r.path == "/v2/droplets"]) == 1


def test_bad_extra_cidr_names_the_setting(fake, spec):
    with pytest.raises(CloudError) as err:
        cloud.provision(with_(spec, extra_ssh_cidrs=("not-a-cidr",)))
    assert "extra SSH CIDR 'not-a-cidr'" in str(err.value) and "extra_ssh_cidrs" in str(err.value)


def test_droplet_never_active_is_a_bounded_error(fake, backend, spec):
    backend.release.clear()  # the machine never finishes building
    started = time.monotonic()
    with pytest.raises(CloudError) as err:
        cloud.provision(with_(spec, active_timeout=1.0))
    assert 1.0 <= time.monotonic() - started < 4
    assert "still 'new'" in str(err.value) and "DO_ACTIVE_TIMEOUT" in str(err.value)
    backend.release.set()


def test_no_public_ip_is_a_warning_not_an_error(fake, backend, spec):
    backend.ip = None  # a private-only machine: the fake lists no public address
    result = cloud.provision(spec)
    assert result.droplet.public_ipv4 is None and not result.ssh_ready
    assert any("no public IPv4" in w for w in result.warnings)
    assert result.dns.status == "skipped"


def test_ssh_not_answering_is_a_bounded_warning(fake, spec):
    closed_port = free_port()
    started = time.monotonic()
    result = cloud.provision(with_(spec, ssh_port=closed_port, ssh_wait_timeout=1.0))
    assert 1.0 <= time.monotonic() - started < 4
    assert not result.ssh_ready
    assert any(f"127.0.0.1:{closed_port}" in w and "allowlist" in w for w in result.warnings)


def test_operator_ip_unreachable_is_an_actionable_error(fake, spec):
    url = f"http://127.0.0.1:{free_port()}/ip"
    with pytest.raises(CloudError) as err:
        cloud.provision(with_(spec, operator_ip_url=url, operator_ip_timeout=0.5))
    assert "OPERATOR_IP_URL" in str(err.value) and "--skip-allowlist" in str(err.value)


def test_find_droplet_is_read_only(fake, spec):
    assert cloud.find_droplet(spec) is None
    made = cloud.provision(spec).droplet
    fake.clear_requests()
    found = cloud.find_droplet(spec)
    assert found is not None and found.id == made.id and not found.created
    assert found.public_ipv4 == "127.0.0.1"
    assert writes(fake) == []


def test_same_name_without_tag_is_not_adopted(fake, spec):
    cloud.provision(with_(spec, tags=()))
    with pytest.raises(CloudError) as err:
        cloud.find_droplet(spec)
    assert "without tag 'stackdeploy'" in str(err.value) and "DROPLET_NAME" in str(err.value)


def test_endpoint_env_is_restored_after_each_call(fake, spec, monkeypatch):
    monkeypatch.delenv("DIGITALOCEAN_END_POINT", raising=False)
    monkeypatch.setenv("PYTHON_DIGITALOCEAN_REQUEST_TIMEOUT_SEC", "42")
    cloud.check_token(spec)
    cloud.find_droplet(spec)
    assert "DIGITALOCEAN_END_POINT" not in os.environ
    assert os.environ["PYTHON_DIGITALOCEAN_REQUEST_TIMEOUT_SEC"] == "42"


def test_bad_endpoint_is_a_clear_error(spec):
    with pytest.raises(CloudError, match="ending in /v2/"):
        cloud.check_token(with_(spec, endpoint="http://127.0.0.1:9/api"))


def test_the_droplet_is_reported_as_soon_as_it_exists(fake, api_spec):
    # A provision that fails (or is interrupted) after creating the droplet must still say which one.
    fake.inject("POST", r"^/v2/firewalls$", 500, times=-1)
    seen: list[cloud.DropletInfo] = []
    with pytest.raises(CloudUnavailable, match="creating the firewall"):
        cloud.provision(api_spec, on_droplet=seen.append)
    [droplet_id] = [int(i) for i in fake.state["droplets"]]
    assert [(d.id, d.name, d.created) for d in seen] == [(droplet_id, "stack-1", True)]
    fake.clear_requests()
    fake.faults.clear()
    seen.clear()
    result = cloud.provision(api_spec, on_droplet=seen.append)     # found, then active with its address
    assert [(d.id, d.created) for d in seen] == [(droplet_id, False)] * 2
    assert seen[-1] == result.droplet and seen[-1].public_ipv4 == "127.0.0.1"


def posts(fake, path: str) -> list[int]:
    return [r.status for r in fake.requests if r.method == "POST" and r.path == path]


def test_firewall_create_whose_answer_was_lost_is_not_duplicated(fake, backend, api_spec):
    # A duplicate would keep its own copy of the SSH rule: an old operator address stays allowed.
    fake.inject("POST", r"^/v2/firewalls$", 502, times=1, process=True)
    result = cloud.provision(api_spec)
    assert result.firewall.status == "created"
    [fw] = fake.state["firewalls"].values()
    assert fw["droplet_ids"] == [result.droplet.id] and posts(fake, "/v2/firewalls") == [502]


def test_firewall_create_that_timed_out_after_the_write_is_not_duplicated(fake, api_spec):
    fake.inject("POST", r"^/v2/firewalls$", None, times=1, delay=1.5, process=True)  # done, answer too late
    started = time.monotonic()
    cloud.provision(with_(api_spec, request_timeout=0.5))
    time.sleep(max(0.0, started + 1.7 - time.monotonic()))   # the late answer is logged when it is sent
    assert len(fake.state["firewalls"]) == 1 and posts(fake, "/v2/firewalls") == [202]


def test_ssh_key_registration_whose_answer_was_lost_is_not_repeated(fake, api_spec):
    fake.inject("POST", r"^/v2/account/keys$", 500, times=1, process=True)
    result = cloud.provision(api_spec)
    assert result.ssh_key_registered
    [key] = fake.state["ssh_keys"].values()
    assert posts(fake, "/v2/account/keys") == [500]
    assert fake.store.droplet(result.droplet.id)["_public_keys"] == [key["public_key"]]


def test_dns_record_create_whose_answer_was_lost_is_not_duplicated(fake, api_spec):
    add_zone(fake, "example.test")
    fake.inject("POST", r"^/v2/domains/example.test/records$", 503, times=1, process=True)
    result = cloud.provision(api_spec)
    apps = [r for r in fake.state["records"]["example.test"] if r["type"] == "A" and r["name"] == "app"]
    assert len(apps) == 1 and apps[0]["data"] == "127.0.0.1"
    assert a_records(fake, "example.test") == {"app": "127.0.0.1", "flower.app": "127.0.0.1",
                                               "admin.app": "127.0.0.1"}
    assert {c["action"] for c in result.dns.records_changed} == {"created"}
    assert len(posts(fake, "/v2/domains/example.test/records")) == 3      # one per name, none repeated


def test_a_key_registered_meanwhile_by_another_run_is_used(fake, api_spec):
    def register_after_lookup(method: str, path: str, status: int, payload):
        if method == "GET" and path.startswith("/v2/account/keys/") and status == 404 and not fake.state["ssh_keys"]:
            fake.store.create_key({"name": "other-run", "public_key": api_spec.ssh_public_key})
        return payload
    fake.add_response_hook(register_after_lookup)   # our POST is refused: "already in use"
    result = cloud.provision(api_spec)
    assert not result.ssh_key_registered and posts(fake, "/v2/account/keys") == [422]
    [key] = fake.state["ssh_keys"].values()
    assert key["name"] == "other-run"


def test_a_duplicate_firewall_is_deleted_so_no_old_address_stays_allowed(fake, backend, api_spec):
    first = cloud.provision(api_spec)
    [kept] = fake.state["firewalls"]
    fake.store.firewall(kept)["created_at"] = "2020-01-01T00:00:00Z"   # the oldest stays
    copy = dict(fake.state["firewalls"][kept], name="stack-1", droplet_ids=[first.droplet.id])
    copy["inbound_rules"] = [{"protocol": "tcp", "ports": "22", "sources": {"addresses": ["192.0.2.200/32"]}}]
    fake.store.create_firewall(copy)              # left by a create whose answer was lost, say
    fake.operator_ip = "192.0.2.44"
    events: list[tuple[str, str]] = []
    cloud.provision(api_spec, on_event=lambda *e: events.append(e))
    assert list(fake.state["firewalls"]) == [kept]
    assert fake.store.effective_inbound(first.droplet.id)[0]["sources"]["addresses"] == [
        "192.0.2.44/32", "203.0.113.0/24"]
    assert any(lvl == "warning" and "deleted duplicate firewall" in m for lvl, m in events)
