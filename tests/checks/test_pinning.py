"""The pinned session: the name is used for SNI, Host and hostname checks, the IP for packets."""
from __future__ import annotations

import pytest
import requests

from deploy.checks.pinned import PinningError, pinned_session
from tests.checks.conftest import target_for

DOMAIN = "shop.example.test"  # never resolved: the adapter does not ask DNS


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_requests_reach_the_ip_with_the_domain_as_sni_and_host(edge):
    server = edge(domain=DOMAIN)
    with pinned_session(target_for(server, domain=DOMAIN)) as session:
        response = session.get(f"https://flower.{DOMAIN}/", timeout=5)
    assert response.status_code == 401
    assert response.url == f"https://flower.{DOMAIN}/"
    assert server.seen.sni == [f"flower.{DOMAIN}"]
    assert server.seen.requests == [(f"flower.{DOMAIN}", "/")]


def test_verification_checks_the_certificate_against_the_domain_not_the_ip(edge):
    server = edge(domain=DOMAIN)
    target = target_for(server, domain=DOMAIN)
    with pinned_session(target, verify=True) as session:
        session.verify = str(server.cert.ca)
        assert session.get(f"https://{DOMAIN}/api/health", timeout=5).json()["status"] == "ok"
    other = edge(domain="other.example.test")
    with pinned_session(target_for(other, domain=DOMAIN), verify=True) as session:
        session.verify = str(other.cert.ca)
        with pytest.raises(requests.exceptions.SSLError, match="match|mismatch"):
            session.get(f"https://{DOMAIN}/", timeout=5)


def test_hosts_outside_the_domain_are_refused_before_anything_is_sent(edge):
    server = edge(domain=DOMAIN)
    with pinned_session(target_for(server, domain=DOMAIN)) as session:
        for url in ("https://example.org/", f"https://{DOMAIN}.evil.org/", f"http://not{DOMAIN}/"):
            with pytest.raises(PinningError, match="only shop.example.test"):
                session.get(url, timeout=5)
    assert server.seen.requests == [] and server.seen.sni == []
