"""Pure rules: header comparisons, issuer verdicts and settings validation."""
from __future__ import annotations

import pytest

from deploy.checks import ChecksConfig, ChecksConfigError, PublicSite, rate_limit_burst_size
from deploy.checks.headers import evaluate, parse_rule
from deploy.checks.routes import percentile
from deploy.tls import classify_issuer, parse_certificate
from tests.checks.certs import PRODUCTION, STAGING, TRAEFIK_DEFAULT, make_cert


@pytest.mark.parametrize("header, spec, observed, ok", [
    ("Strict-Transport-Security", "max-age>=15552000", "max-age=31536000; includeSubDomains; preload", True),
    ("Strict-Transport-Security", "max-age>=15552000", 'includeSubDomains; max-age="15552000"', True),
    ("Strict-Transport-Security", "max-age>=15552000", "max-age=86400", False),
    ("Strict-Transport-Security", "max-age>=15552000", "includeSubDomains", False),
    ("X-Frame-Options", "SAMEORIGIN", "sameorigin", True),
    ("X-Frame-Options", "SAMEORIGIN", "DENY", False),
    ("Referrer-Policy", "one-of:no-referrer,strict-origin-when-cross-origin", "unsafe-url, strict-origin-when-cross-origin", True),
    ("Referrer-Policy", "one-of:no-referrer,strict-origin-when-cross-origin", "no-referrer, unsafe-url", False),
    ("X-Content-Type-Options", "present", "anything", True),
    ("X-Content-Type-Options", "nosniff", None, False),
])
def test_header_rules(header, spec, observed, ok):
    passed, reason = evaluate(parse_rule(header, spec), observed)
    assert passed is ok
    assert header in reason


@pytest.mark.parametrize("policy, fragment", [
    ({"Strict-Transport-Security": "max-age>=a year"}, "max-age>=SECONDS"),
    ({"Referrer-Policy": "one-of:"}, "one-of:a,b"),
    ({"Bad Header": "x"}, "not a valid HTTP header name"),
    ({"X-Frame-Options": " "}, "empty"),
])
def test_bad_header_policy_is_a_clear_config_error(policy, fragment):
    with pytest.raises(ChecksConfigError, match="checks.header_policy") as caught:
        ChecksConfig(header_policy=policy)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("kwargs, setting", [
    ({"samples": 0}, "checks.samples"),
    ({"timeout": -1}, "checks.timeout"),
    ({"p95_budget_s": 0}, "checks.p95_budget_s"),
    ({"rate_limit_requests": 0}, "checks.rate_limit_requests"),
    ({"rate_limit_path": "api/notes"}, "checks.rate_limit_path"),
    ({"flower_host": "flower.example.com"}, "checks.flower_host"),
])
def test_bad_checks_settings_name_the_setting(kwargs, setting):
    with pytest.raises(ChecksConfigError, match=setting):
        ChecksConfig(**kwargs)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"ip": "droplet.example.com"}, "not an IP address"),
    ({"domain": "https://app.example.com/"}, "DOMAIN"),
    ({"deploy_env": ""}, "DEPLOY_ENV"),
    ({"https_port": 0}, "https_port"),
])
def test_bad_target_names_the_setting(kwargs, fragment):
    base = {"ip": "203.0.113.10", "domain": "app.example.com", "deploy_env": "production"}
    with pytest.raises(ChecksConfigError, match=fragment):
        PublicSite(**{**base, **kwargs})


def test_target_normalises_domain_and_knows_production():
    target = PublicSite("2001:db8::1", "App.Example.COM.", "Production")
    assert target.domain == "app.example.com" and target.is_production
    assert not PublicSite("203.0.113.10", "app.example.com", "staging").is_production
    # Like the stack's Traefik template: anything but staging/development is production (fail closed).
    assert PublicSite("203.0.113.10", "app.example.com", "prod-typo").is_production


@pytest.mark.parametrize("issuer, verdict", [(STAGING, "pass"), (PRODUCTION, "fail"), (TRAEFIK_DEFAULT, "warn"),
                                             (("Some Corp CA", "Some Corp"), "warn"),
                                             (("Fake LE Intermediate X1", None), "pass")])
def test_issuer_verdicts(tmp_path, issuer, verdict):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    files = make_cert(tmp_path, issuer, "app.example.com")
    der = x509.load_pem_x509_certificate(files.cert.read_bytes()).public_bytes(Encoding.DER)
    info = parse_certificate(der)
    status, message = classify_issuer(info)
    assert status == verdict
    if verdict == "warn" and issuer != TRAEFIK_DEFAULT:
        assert "Some Corp CA" in message


@pytest.mark.parametrize("issuer, verdict", [(("Pebble Intermediate CA 2022f4", None), "pass"), (PRODUCTION, "fail"),
                                             (TRAEFIK_DEFAULT, "warn"), (STAGING, "pass")])
def test_issuer_verdicts_with_a_test_ca(tmp_path, issuer, verdict):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    files = make_cert(tmp_path, issuer, "app.example.com")
    info = parse_certificate(x509.load_pem_x509_certificate(files.cert.read_bytes()).public_bytes(Encoding.DER))
    status, message = classify_issuer(info, "https://10.77.0.253:14000/dir")
    assert status == verdict, message
    if issuer[0].startswith("Pebble"):
        assert "test CA" in message and "Pebble Intermediate CA 2022f4" in message
        assert classify_issuer(info)[0] == "warn"  # without ACME_TEST_CA it is an unknown CA


def test_percentile_is_nearest_rank():
    assert percentile([0.1, 0.2, 0.3, 0.4, 5.0], 95) == 5.0
    assert percentile([0.1, 0.2, 0.3, 0.4, 5.0], 50) == 0.3
    assert percentile([2.0], 95) == 2.0


def test_burst_size_exceeds_the_configured_rpm():
    assert rate_limit_burst_size(60) == 130
    assert rate_limit_burst_size(600) == 1260
    with pytest.raises(ChecksConfigError, match="RATE_LIMIT_API_RPM"):
        rate_limit_burst_size(0)


def test_config_from_invoke_yaml_section():
    from deploy.checks import config_from_settings
    from deploy.settings import KEYS

    # The deploy.checks section invoke.yaml may hold, with the built-in defaults as values.
    section = {k.path.split(".", 1)[1]: k.default for k in KEYS if k.path and k.path.startswith("checks.")}
    config = config_from_settings(section, rate_limit_rpm=60)
    assert config.p95_budget_s == section["p95_budget"] and config.samples == section["samples"]
    assert config.rate_limit_requests == 130
    with pytest.raises(ChecksConfigError, match="deploy.checks.sampels"):
        config_from_settings({"sampels": 3})
