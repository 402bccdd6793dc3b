"""deploy.cloud.plan_provision against the fake API through the real python-digitalocean library:
what provision() would do, learnt from GET requests only."""
from __future__ import annotations

from deploy import cloud
from tests.cloud.conftest import with_


def methods(fake) -> set[str]:
    return {r.method for r in fake.requests}


def test_fresh_account_plans_every_resource_and_sends_only_gets(fake, api_spec):
    fake.store.create_domain({"name": "example.test"})
    before = fake.state
    plan = cloud.plan_provision(api_spec)

    assert methods(fake) == {"GET"}
    assert fake.state == before                         # nothing made, nothing changed
    assert (plan.droplet_action, plan.droplet) == ("create", None)
    assert (plan.name, plan.size, plan.region, plan.image) == ("stack-1", "s-2vcpu-4gb", "fra1", "ubuntu-24-04-x64")
    assert plan.ssh_identity == "register"
    assert plan.firewall.action == "create"
    assert plan.firewall.ssh_from == ["198.51.100.7/32", "203.0.113.0/24"] and plan.firewall.ssh_from_now == []
    assert plan.dns.status == "managed"
    assert plan.dns.records_changed == [
        {"name": h, "action": "create", "from": None, "to": None}   # to: the IP the droplet will get
        for h in ("app.example.test", "flower.app.example.test", "admin.app.example.test")]
    assert plan.changes and plan.warnings == []


def test_provisioned_account_plans_no_change(fake, api_spec):
    fake.store.create_domain({"name": "example.test"})
    made = cloud.provision(api_spec).droplet
    fake.clear_requests()
    before = fake.state
    plan = cloud.plan_provision(api_spec)

    assert methods(fake) == {"GET"} and fake.state == before
    assert plan.droplet_action == "found" and plan.droplet is not None and plan.droplet.id == made.id
    assert plan.droplet.public_ipv4 == "127.0.0.1" and plan.ssh_identity == "unused"
    assert plan.firewall.action == "unchanged" and plan.dns.records_changed == []
    assert not plan.changes and plan.warnings == []


def test_drift_is_planned_as_the_changes_provision_would_make(fake, api_spec):
    fake.store.create_domain({"name": "example.test"})
    cloud.provision(api_spec)
    fake.operator_ip = "192.0.2.44"                      # the operator moved
    fake.store.create_record("example.test", {"type": "A", "name": "admin.app", "data": "192.0.2.99"})
    fake.store.delete_record("example.test", fake.store.records("example.test", name="app", rtype="A")[0]["id"])
    fake.clear_requests()
    before = fake.state
    plan = cloud.plan_provision(with_(api_spec, size="s-4vcpu-8gb"))

    assert methods(fake) == {"GET"} and fake.state == before
    assert plan.firewall.action == "update"
    assert plan.firewall.ssh_from_now == ["198.51.100.7/32", "203.0.113.0/24"]
    assert plan.firewall.ssh_from == ["192.0.2.44/32", "203.0.113.0/24"]
    assert {(c["name"], c["action"], c["from"]) for c in plan.dns.records_changed} == {
        ("app.example.test", "create", None), ("admin.app.example.test", "update", "192.0.2.99")}
    assert all(c["to"] == "127.0.0.1" for c in plan.dns.records_changed)
    assert any("s-2vcpu-4gb" in w and "DROPLET_SIZE" in w for w in plan.warnings)


def test_skipped_allowlist_and_unmanaged_domain(fake, api_spec):
    plan = cloud.plan_provision(with_(api_spec, firewall_enabled=False))
    assert plan.firewall.action == "skipped"
    assert not any("firewalls" in r.path or "my-ip" in r.path for r in fake.requests)
    assert plan.dns.status == "unmanaged" and "app.example.test" in plan.dns.warning
    assert plan.dns.warning in plan.warnings and methods(fake) == {"GET"}
