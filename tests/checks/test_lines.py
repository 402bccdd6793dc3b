"""The one line each check shows the operator (console table, summary.md, report.html), from
real check results against the local edge servers: short, readable, never a dict repr."""
from __future__ import annotations

import re

import pytest

from deploy.checks import PublicSite, ChecksReport, run_checks
from deploy.checks.lines import MAX_LINE, human_line
from lab.ports import free_port
from tests.checks.certs import TRAEFIK_DEFAULT
from tests.checks.conftest import fast_config, target_for
from tests.checks.servers import health_json


def lines(report: ChecksReport) -> dict[str, str]:
    out = {r.name: human_line(r.to_dict()) for r in report.results}
    for name, line in out.items():
        assert line and len(line) <= MAX_LINE, (name, line)
        assert not re.search(r"[{[]'", line), f"{name} shows raw data: {line}"
    return out


def test_healthy_stack_reads_as_one_line_per_check(edge):
    server = edge()
    got = lines(run_checks(target_for(server), fast_config()))

    assert got["dns"] == "resolves to 127.0.0.1"
    assert got["tls"] == "issuer: (STAGING) Let's Encrypt Pretend Pear X1"
    assert got["http-redirect"] == f"308 -> https://localhost:{server.https_port}/"
    assert got["home"] == "200 on 3/3 requests" and got["api-health"] == "200 on 3/3 requests"
    for name in ("latency-home", "latency-api-health"):
        assert re.fullmatch(r"p50 [\d.]+ ms, p95 [\d.]+ ms over 3 samples", got[name]), got[name]
    assert got["header:X-Content-Type-Options"] == "'nosniff' on /, /api/health"
    assert got["admin-main-host"] == "answered 200"
    assert got["admin-host"] == "answered 401, asks for credentials (Basic)"
    assert got["flower"] == "answered 401, asks for credentials (Basic)"
    assert got["rate-limit"] == "429 after 4 requests, Retry-After 60"


def test_traefik_default_certificate_line_says_why_it_warns(edge):
    got = lines(run_checks(target_for(edge(issuer=TRAEFIK_DEFAULT)), fast_config(rate_limit_burst=False)))
    assert got["tls"] == "issuer: TRAEFIK DEFAULT CERT (self-signed, not issued for the domain)"


def test_failing_checks_show_what_was_wrong(edge):
    headers = {"Strict-Transport-Security": "max-age=300", "X-Content-Type-Options": "nosniff"}
    server = edge(headers=headers, rate_limit=None, flower_open=True, admin_host="django", redirect_http=False,
                  health_body=health_json("degraded"))
    got = lines(run_checks(target_for(server), fast_config(rate_limit_requests=5)))

    assert got["header:X-Frame-Options"] == "missing on /, /api/health"
    assert got["header:Strict-Transport-Security"] == "'max-age=300' on /, /api/health"
    assert got["rate-limit"] == "no 429 in 5 requests (200 x5)"
    assert got["flower"] == "answered 200"
    assert got["admin-host"] == "answered 302 -> /admin/login/?next=/admin/"
    assert got["http-redirect"] == "200, no redirect"
    assert got["api-health"] == "200 on 3/3 requests, but body status 'degraded'"


def test_health_answered_by_the_front_end_says_so(edge):
    got = lines(run_checks(target_for(edge(health_body=b"<html></html>")), fast_config(rate_limit_burst=False)))
    assert got["api-health"] == "200 on 3/3 requests, but the body is not JSON"


def test_slow_route_line_names_the_budget(edge):
    got = lines(run_checks(target_for(edge(delay=0.3)), fast_config(samples=2, p95_budget_s=0.2, rate_limit_burst=False)))
    assert re.fullmatch(r"p50 \d+ ms, p95 \d+ ms over 2 samples \(budget: p95 <= 0.2 s\)", got["latency-home"])


def test_skipped_and_unreachable_checks_say_why():
    port = free_port()  # nothing listens there
    target = PublicSite("127.0.0.1", "localhost", "staging", https_port=port, http_port=port)
    got = lines(run_checks(target, fast_config(samples=1, rate_limit_burst=False)))

    assert got["tls"].startswith("could not run: ") and "Connection refused" in got["tls"]
    assert got["home"] == "0/1 answered 2xx (no answer x1)"
    assert got["rate-limit"] == "burst check turned off (checks.rate_limit_burst)"
    assert got["header:X-Frame-Options"].startswith("no response from /")


@pytest.mark.parametrize("text", ["x" * 300, "line one\nline two  with   spaces"])
def test_a_long_or_multiline_message_is_clipped_to_one_short_line(text):
    line = human_line({"name": "something-new", "status": "warn", "observed": {"a": 1}, "message": text})
    assert "\n" not in line and len(line) <= MAX_LINE
    assert line.endswith("...") == (len(text) > MAX_LINE)
