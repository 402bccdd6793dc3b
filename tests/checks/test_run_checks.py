"""run_checks against real local HTTPS/HTTP servers: one behaviour changed per test."""
from __future__ import annotations

import json
import time

import pytest

from deploy.checks import ChecksReport, rate_limit_burst_size, run_checks
from lab.ports import free_port
from tests.checks.certs import PRODUCTION, TRAEFIK_DEFAULT
from tests.checks.conftest import fast_config, target_for
from tests.checks.servers import health_json


def statuses(report: ChecksReport) -> dict[str, str]:
    return {r.name: r.status for r in report.results}


def test_healthy_stack_passes_every_check_and_files_hold_the_evidence(edge):
    server = edge()
    report = run_checks(target_for(server), fast_config())

    assert statuses(report) == {name: "pass" for name in statuses(report)}, [
        r.to_dict() for r in report.results if r.status != "pass"]
    assert set(statuses(report)) == {
        "dns", "tls", "http-redirect", "home", "latency-home", "api-health", "latency-api-health",
        "header:Strict-Transport-Security", "header:X-Content-Type-Options", "header:X-Frame-Options",
        "header:Referrer-Policy", "admin-main-host", "admin-host", "flower", "rate-limit"}
    assert report.status == "pass"
    assert set(report.files) == {"http/dns.txt", "http/tls.json", "http/redirect.txt", "http/headers-root.txt",
                                 "http/headers-api-health.txt", "http/latency.json", "http/rate-limit.txt"}
    root = report.files["http/headers-root.txt"].splitlines()
    assert root[0] == "HTTP/1.1 200 OK"
    assert "X-Frame-Options: sameorigin" in root
    assert json.loads(report.files["http/tls.json"])["issuer_cn"] == "(STAGING) Pretend Pear X1"
    latency = json.loads(report.files["http/latency.json"])
    assert len(latency["/api/health"]["samples"]) == 3 and latency["/"]["p95_s"] >= latency["/"]["p50_s"]
    # The burst stopped at the first 429: three allowed requests, then one refused.
    assert server.seen.notes_hits == 4
    assert report.get("rate-limit").observed["requests"] == 4
    assert "not verified" in report.get("home").message
    json.dumps([r.to_dict() for r in report.results])  # the artifact writer must be able to store it


def test_the_route_checks_ask_side_by_side(edge):
    """The front end and the API are asked at the same time (a no-change deploy waited 1.2 s for
    the checks one after another): each first request is answered only once the other arrives."""
    import threading
    report = run_checks(target_for(edge(meet=threading.Barrier(2, timeout=5))), fast_config(rate_limit_burst=False))
    assert report.get("home").status == "pass", report.get("home").message
    assert report.get("api-health").status == "pass", report.get("api-health").message


def test_missing_and_weak_headers_fail_naming_the_header(edge):
    headers = {"Strict-Transport-Security": "max-age=300", "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "unsafe-url"}
    report = run_checks(target_for(edge(headers=headers)), fast_config(rate_limit_burst=False))

    hsts = report.get("header:Strict-Transport-Security")
    assert hsts.status == "fail" and "max-age=300, below 15552000" in hsts.message
    assert hsts.observed == {"/": "max-age=300", "/api/health": "max-age=300"}
    xfo = report.get("header:X-Frame-Options")
    assert xfo.status == "fail" and "X-Frame-Options missing on /" in xfo.message
    assert xfo.observed == {"/": None, "/api/health": None}
    assert report.get("header:Referrer-Policy").status == "fail"
    assert report.get("header:X-Content-Type-Options").status == "pass"
    assert report.get("home").status == "pass" and report.status == "fail"


def test_production_lets_encrypt_certificate_fails_tls_policy(edge):
    report = run_checks(target_for(edge(issuer=PRODUCTION)), fast_config(rate_limit_burst=False))
    tls = report.get("tls")
    assert tls.status == "fail"
    assert "production Let's Encrypt" in tls.message and "acme-staging-v02" in tls.message
    assert tls.observed["issuer_o"] == "Let's Encrypt" and tls.observed["issuer_cn"] == "R11"
    # The HTTP checks do not verify the chain, so they still see the site.
    assert report.get("home").status == "pass"


def test_traefik_default_certificate_is_a_warning(edge):
    report = run_checks(target_for(edge(issuer=TRAEFIK_DEFAULT)), fast_config(rate_limit_burst=False))
    tls = report.get("tls")
    assert tls.status == "warn"
    assert "TRAEFIK DEFAULT CERT" in tls.message and "ACME has not issued" in tls.message
    assert tls.observed["covers_domain"] is False
    assert report.status == "warn"


def test_default_certificate_is_asked_again_for_a_bounded_time(edge):
    server = edge(issuer=TRAEFIK_DEFAULT)
    t0 = time.monotonic()
    tls = run_checks(target_for(server), fast_config(rate_limit_burst=False, cert_wait_s=3)).get("tls")
    took = time.monotonic() - t0
    assert tls.status == "warn" and "after waiting 2s for ACME" in tls.message, tls.message
    assert 2 <= took < 3 + 20


def test_slow_routes_fail_the_p95_budget_but_still_answer_ok(edge):
    report = run_checks(target_for(edge(delay=0.3)), fast_config(samples=2, p95_budget_s=0.2, rate_limit_burst=False))
    for name in ("latency-home", "latency-api-health"):
        result = report.get(name)
        assert result.status == "fail" and "over the 0.2 s budget" in result.message
        assert result.observed["p95_s"] >= 0.3
    assert report.get("home").status == "pass" and report.get("api-health").status == "pass"


def test_each_latency_sample_pays_for_its_own_connection(edge):
    """A first-time visitor's wait includes the TCP and TLS handshakes, so every sample opens a
    connection of its own, also against an edge that keeps connections open when asked to close."""
    server = edge(honour_connection_close=False)
    report = run_checks(target_for(server), fast_config(samples=3, rate_limit_burst=False))
    for path in ("/", "/api/health"):
        samples = [number for seen_path, number in server.seen.via if seen_path == path][:3]
        assert len(set(samples)) == 3, (path, server.seen.via)
    assert report.get("home").status == "pass" and report.get("api-health").status == "pass"


def test_rate_limit_absent_fails_after_a_bounded_burst(edge):
    server = edge(rate_limit=None)
    report = run_checks(target_for(server), fast_config(rate_limit_requests=7))
    result = report.get("rate-limit")
    assert result.status == "fail" and "no 429 after 7 requests" in result.message
    assert server.seen.notes_hits == 7
    assert "200 x7" in report.files["http/rate-limit.txt"]


def test_a_burst_that_straddles_the_apis_minute_boundary_still_meets_the_limit(edge):
    """The API counts per fixed minute: a burst of limit+10 split by a minute boundary (35 hits
    in one window, 35 in the next) never met a 429 and failed a healthy deploy (seen in the demo)."""
    server = edge(rate_limit=60, rate_window_hits=35)
    report = run_checks(target_for(server), fast_config(rate_limit_requests=rate_limit_burst_size(60)))
    result = report.get("rate-limit")
    assert result.status == "pass", result.message
    assert server.seen.notes_hits == 35 + 61                 # the second window's first request over the limit


def test_rate_limit_without_its_headers_fails_naming_them(edge):
    report = run_checks(target_for(edge(rate_limit_headers=("Retry-After",))), fast_config())
    result = report.get("rate-limit")
    assert result.status == "fail"
    assert "missing X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset" in result.message


def test_rate_limit_burst_can_be_turned_off(edge):
    server = edge()
    report = run_checks(target_for(server), fast_config(rate_limit_burst=False))
    assert report.get("rate-limit").status == "skipped"
    assert server.seen.notes_hits == 0
    assert report.status == "pass"  # a skipped check does not spoil the verdict


def test_rate_limit_path_is_configurable(edge):
    server = edge()
    report = run_checks(target_for(server), fast_config(rate_limit_path="/api/other", rate_limit_requests=4))
    assert report.get("rate-limit").status == "fail"
    assert ("localhost", "/api/other") in server.seen.requests and server.seen.notes_hits == 0


def test_open_flower_fails(edge):
    report = run_checks(target_for(edge(flower_open=True)), fast_config(rate_limit_burst=False))
    flower = report.get("flower")
    assert flower.status == "fail" and "Flower is open" in flower.message
    assert flower.observed["url"] == "https://flower.localhost/"


@pytest.mark.parametrize("env, admin_host, expected", [
    ("staging", "auth", "pass"),
    ("staging", "django", "fail"),
    ("development", "absent", "warn"),
    ("production", "absent", "pass"),
    ("production", "django", "fail"),
])
def test_admin_host_policy_depends_on_environment(edge, env, admin_host, expected):
    report = run_checks(target_for(edge(admin_host=admin_host), env=env), fast_config(rate_limit_burst=False))
    assert report.get("admin-host").status == expected, report.get("admin-host").message
    # /admin/ on the main host is the React fallback page, not Django's admin.
    assert report.get("admin-main-host").status == "pass"


def test_plain_http_without_redirect_fails(edge):
    report = run_checks(target_for(edge(redirect_http=False)), fast_config(rate_limit_burst=False))
    result = report.get("http-redirect")
    assert result.status == "fail" and result.observed["status"] == 200
    assert "HTTP->HTTPS redirect" in result.message


def test_health_that_is_not_ok_fails_with_the_body_recorded(edge):
    report = run_checks(target_for(edge(health_body=health_json("degraded"))), fast_config(rate_limit_burst=False))
    result = report.get("api-health")
    assert result.status == "fail" and "'degraded'" in result.message
    assert "degraded" in result.observed["body"]


def test_health_answered_by_the_front_end_is_explained(edge):
    report = run_checks(target_for(edge(health_body=b"<html></html>")), fast_config(rate_limit_burst=False))
    assert "not JSON" in report.get("api-health").message


def test_dns_pointing_elsewhere_warns_and_checks_still_run_against_the_ip(edge):
    # localhost resolves to 127.0.0.1 from /etc/hosts (no network); the "droplet" listens on 127.0.0.2.
    server = edge(address="127.0.0.2")
    report = run_checks(target_for(server, ip="127.0.0.2"), fast_config(rate_limit_burst=False))
    dns = report.get("dns")
    assert dns.status == "warn" and dns.message.startswith("DNS WARNING")
    assert "127.0.0.1" in dns.message and "not the droplet 127.0.0.2" in dns.message
    assert report.get("home").status == "pass" and report.get("tls").status == "pass"


def test_unreachable_droplet_fails_each_check_without_stopping_the_others():
    from deploy.checks import PublicSite
    port = free_port()  # nothing listens there
    target = PublicSite("127.0.0.1", "localhost", "staging", https_port=port, http_port=port)
    report = run_checks(target, fast_config(samples=1))
    results = statuses(report)
    assert results["dns"] == "pass"
    for name in ("tls", "http-redirect", "home", "api-health", "admin-host", "flower", "rate-limit"):
        assert results[name] == "fail", name
    assert "Connection refused" in report.get("tls").message
    assert results["header:X-Frame-Options"] == "skipped"
