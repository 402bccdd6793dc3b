"""The fake API's domains and records, served by the lab's real DNS server (knotd), and the
DNS check asking that server directly (DNS_RESOLVER) instead of this machine's resolver."""
from __future__ import annotations

import requests

from deploy.checks.context import Context
from deploy.checks.dns import check_dns
from deploy.checks.model import PublicSite, ChecksConfig
from lab.droplets.network import ensure_network
from lab.fake_do.server import FakeDigitalOcean
from lab.services import dns as labdns
from lab.services.containers import container_name

TOKEN = "dns-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _check(cfg, ip: str, domain: str = "app.lab.test"):
    ctx = Context(PublicSite(ip=ip, domain=domain, deploy_env="production"),
                  ChecksConfig(dns_resolvers=(cfg.dns_ip,), timeout=3), requests.Session())
    return check_dns(ctx), ctx.files["http/dns.txt"]


def test_records_written_through_the_api_are_answered_by_knot(lab_cfg, tmp_path):
    ensure_network(lab_cfg)
    labdns.ensure(lab_cfg, log=lambda m: None)
    publisher = labdns.ZonePublisher(labdns.zones_dir(lab_cfg), container_name(lab_cfg, "dns"), lab_cfg.dns_ip)
    state = str(tmp_path / "api-state.json")
    with FakeDigitalOcean(TOKEN, dns=publisher, state_file=state) as fake:
        assert requests.post(fake.base_url + "domains", json={"name": "app.lab.test", "ip_address": "10.9.0.5"},
                             headers=AUTH, timeout=10).status_code == 201
        result, text = _check(lab_cfg, "10.9.0.5")
        assert result.status == "pass", result.message
        assert f"asked {lab_cfg.dns_ip}" in result.message and "10.9.0.5" in text

        records = requests.get(fake.base_url + "domains/app.lab.test/records?type=A", headers=AUTH, timeout=10).json()
        apex = [r for r in records["domain_records"] if r["name"] == "@"][0]
        requests.put(fake.base_url + f"domains/app.lab.test/records/{apex['id']}", json={"data": "10.9.0.6"},
                     headers=AUTH, timeout=10).raise_for_status()
        result, _ = _check(lab_cfg, "10.9.0.5")
        assert result.status == "warn" and "resolves to 10.9.0.6" in result.message

        requests.post(fake.base_url + "domains/app.lab.test/records", headers=AUTH, timeout=10,
                      json={"type": "A", "name": "flower", "data": "10.9.0.6", "ttl": 60}).raise_for_status()
        result, _ = _check(lab_cfg, "10.9.0.6", "flower.app.lab.test")
        assert result.status == "pass", result.message

    # A restarted API serves what its state file holds, even after the zone files are gone.
    for path in labdns.zones_dir(lab_cfg).glob("*.zone"):
        path.unlink()
    with FakeDigitalOcean(TOKEN, dns=publisher, state_file=state) as fake:
        assert _check(lab_cfg, "10.9.0.6")[0].status == "pass"
        requests.delete(fake.base_url + "domains/app.lab.test", headers=AUTH, timeout=10).raise_for_status()
        result, text = _check(lab_cfg, "10.9.0.6")
        assert result.status == "warn" and "does not resolve" in result.message, result.message
        assert "does not resolve" in text


def test_an_unanswering_resolver_is_a_warning_that_names_it(lab_cfg):
    ensure_network(lab_cfg)   # nothing listens on the DNS address without labdns.ensure
    result, _ = _check(lab_cfg, "10.9.0.5")
    assert result.status == "warn" and f"no answer from {lab_cfg.dns_ip}" in result.message


def test_a_service_that_exits_is_reported_with_its_log(lab_cfg):
    import pytest

    from lab.errors import LabError
    from lab.images.recipes import DNS_TAG
    from lab.services.containers import ensure_container, wait_until

    ensure_network(lab_cfg)
    name = ensure_container(lab_cfg, "dns", DNS_TAG, lab_cfg.dns_ip, [],
                            ["sh", "-c", "echo 'error: bad zone config' >&2; exit 3"], log=lambda m: None)
    with pytest.raises(LabError) as err:
        wait_until(lambda: False, name, "DNS server", timeout=20)
    assert "exited before it was ready" in str(err.value) and "bad zone config" in str(err.value)
