"""The certificate the droplet serves for the domain: issuer recorded and judged (NFR-003)."""
from __future__ import annotations

import json
import time

from deploy.checks.context import Context
from deploy.checks.model import CheckResult, PublicSite, worst
from deploy.tls import CertificateInfo, TlsVerdict, classify_issuer, fetch_certificate, is_traefik_default


def _served(ctx: Context) -> tuple[CertificateInfo, TlsVerdict, str, float]:
    """The served certificate and its verdict. Traefik serves its default certificate until
    ACME has issued one (seconds after a fresh Traefik starts): that one is asked again, every
    2 s for at most cert_wait_s, before it counts."""
    target, t0 = ctx.target, time.monotonic()
    while True:
        info = fetch_certificate(target.ip, target.https_port, target.domain, ctx.config.timeout)
        status, message = classify_issuer(info, ctx.config.test_ca_server)
        waited = time.monotonic() - t0
        if not is_traefik_default(info) or waited + 2 > ctx.config.cert_wait_s:
            return info, status, message, waited
        time.sleep(2)


def served_certificate(target: PublicSite, timeout: float) -> CertificateInfo:
    """The certificate the edge serves for the domain, read once (`inv status`: no wait for ACME)."""
    return fetch_certificate(target.ip, target.https_port, target.domain, timeout)


def check_tls(ctx: Context) -> CheckResult:
    target = ctx.target
    info, status, message, waited = _served(ctx)
    if waited >= 1:
        message = f"{message} (after waiting {waited:.0f}s for ACME)"
    observed = {**info.to_dict(), "covers_domain": info.covers(target.domain), "expired": info.expired()}
    ctx.files["http/tls.json"] = json.dumps(
        {"ip": target.ip, "port": target.https_port, "sni": target.domain, "verdict": status,
         "chain_verified": False, **observed}, indent=2) + "\n"
    notes = []
    if observed["expired"]:
        notes.append(f"certificate expired on {info.not_after}")
    if not observed["covers_domain"]:
        notes.append(f"certificate names {', '.join(info.san) or info.subject} but not {target.domain}")
    if notes:
        status = worst([status, "warn"])
        message = f"{message}; " + "; ".join(notes)
    test_ca = ctx.config.test_ca_server
    expected = f"issuer: the test CA {test_ca}" if test_ca else "Let's Encrypt staging issuer"
    return CheckResult("tls", status, observed, expected, message)
