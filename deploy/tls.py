"""Read the certificate a server presents and judge its issuer against the TLS policy (NFR-003).

The simulation must run on Let's Encrypt *staging* certificates only. Staging certificates are
not publicly trusted, so the peer certificate is read WITHOUT verifying the chain: what matters
here is who issued it, not whether a browser would trust it.
"""
from __future__ import annotations

import hashlib
import socket
import ssl
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

TlsVerdict = Literal["pass", "warn", "fail"]

# Every Let's Encrypt staging CA carries "(STAGING)" in its names since 2020; the older
# hierarchy used "Fake LE ..." and "Happy Hacker Fake CA". The produce names are kept as a
# second net in case an issuer's CN is shortened somewhere.
STAGING_MARKERS = (
    "(staging)",
    "fake le",
    "happy hacker",
    "pretend pear",
    "bogus broccoli",
    "counterfeit cashew",
    "wannabe watercress",
    "artificial apricot",
    "ersatz edamame",
    "false fennel",
    "puzzling parsnip",
    "mysterious mulberry",
    "riddling rhubarb",
    "sham spinach",
    "yearning yucca",
    "doctored durian",
)
PRODUCTION_MARKERS = ("let's encrypt", "isrg root")
TRAEFIK_DEFAULT_CN = "traefik default cert"
STAGING_CA_URL = "https://acme-staging-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True)
class CertificateInfo:
    """What the TLS check records about the served certificate (JSON-friendly)."""

    subject: str
    subject_cn: str | None
    issuer: str
    issuer_cn: str | None
    issuer_o: str | None
    san: tuple[str, ...]
    not_before: str
    not_after: str
    serial: str
    sha256: str
    tls_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["san"] = list(self.san)
        return data

    def covers(self, hostname: str) -> bool:
        """True when a SAN (or, lacking SANs, the subject CN) matches hostname, wildcards included."""
        names = self.san or ((self.subject_cn,) if self.subject_cn else ())
        return any(_name_matches(pattern, hostname) for pattern in names)

    def expired(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(timezone.utc)
        return datetime.fromisoformat(self.not_after) < now

    def days_left(self, now: datetime | None = None) -> int:
        """Whole days until it expires (negative once it has)."""
        now = now or datetime.now(timezone.utc)
        return (datetime.fromisoformat(self.not_after) - now).days


def _name_matches(pattern: str, hostname: str) -> bool:
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == hostname


def _first(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    return str(attrs[0].value) if attrs else None


def parse_certificate(der: bytes, tls_version: str | None = None) -> CertificateInfo:
    """Pure: DER bytes -> CertificateInfo."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san_ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        san = tuple(san_ext.value.get_values_for_type(x509.DNSName)) + tuple(
            str(ip) for ip in san_ext.value.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        san = ()
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        subject_cn=_first(cert.subject, NameOID.COMMON_NAME),
        issuer=cert.issuer.rfc4514_string(),
        issuer_cn=_first(cert.issuer, NameOID.COMMON_NAME),
        issuer_o=_first(cert.issuer, NameOID.ORGANIZATION_NAME),
        san=san,
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=cert.not_valid_after_utc.isoformat(),
        serial=format(cert.serial_number, "x"),
        sha256=hashlib.sha256(der).hexdigest(),
        tls_version=tls_version,
    )


def fetch_certificate(ip: str, port: int, server_name: str, timeout: float) -> CertificateInfo:
    """Connect to ip:port with SNI server_name and return the leaf certificate, unverified."""
    context = ssl.create_default_context()
    # Deliberately unverified: staging and Traefik's default certificates are not trusted,
    # and the point of this call is to report who issued them.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((ip, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
            version = tls.version()
    if not der:
        raise ssl.SSLError(f"{ip}:{port} completed the TLS handshake without a certificate")
    return parse_certificate(der, version)


def is_traefik_default(info: CertificateInfo) -> bool:
    """Traefik's self-signed stand-in, served while no ACME certificate exists yet."""
    names = " ".join(filter(None, (info.issuer, info.issuer_cn, info.issuer_o))).lower()
    return TRAEFIK_DEFAULT_CN in (info.subject_cn or "").lower() or TRAEFIK_DEFAULT_CN in names


def classify_issuer(info: CertificateInfo, test_ca: str | None = None) -> tuple[TlsVerdict, str]:
    """Judge the issuer: LE staging passes, LE production fails, Traefik's default cert warns.
    With a test CA configured (ACME_TEST_CA, e.g. Pebble), a certificate it issued passes too."""
    names = " ".join(filter(None, (info.issuer, info.issuer_cn, info.issuer_o))).lower()
    wanted = f"a certificate from the test CA {test_ca}" if test_ca else "a Let's Encrypt staging issuer"
    if is_traefik_default(info):
        return "warn", (
            "Traefik is serving its self-signed TRAEFIK DEFAULT CERT: ACME has not issued a "
            "certificate for this domain yet (check the certresolver in traefik's log and that "
            f"DNS points at the droplet); expected {wanted}"
        )
    if any(marker in names for marker in STAGING_MARKERS):
        return "pass", f"Let's Encrypt staging issuer: {info.issuer}"
    if test_ca and not any(marker in names for marker in PRODUCTION_MARKERS):
        if info.issuer == info.subject:
            return "warn", f"self-signed certificate ({info.subject}); expected {wanted}"
        return "pass", f"test CA issuer (ACME_TEST_CA, {test_ca}): {info.issuer}"
    if any(marker in names for marker in PRODUCTION_MARKERS):
        return "fail", (
            f"production Let's Encrypt certificate (issuer {info.issuer}): this simulation must "
            f"use staging certificates only (NFR-003); set the certresolver caServer to "
            f"{STAGING_CA_URL} and delete the stored acme.json so staging certificates are issued"
        )
    return "warn", f"certificate issued by {info.issuer}, not a Let's Encrypt staging CA"
