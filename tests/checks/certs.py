"""Certificates made in the test, named like the issuers the TLS check must tell apart."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

STAGING = ("(STAGING) Pretend Pear X1", "(STAGING) Let's Encrypt")
PRODUCTION = ("R11", "Let's Encrypt")
TRAEFIK_DEFAULT = ("TRAEFIK DEFAULT CERT", None)


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    ca: Path  # the issuing CA's certificate (the leaf itself when self-signed)


def _name(cn: str, org: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def make_cert(folder: Path, issuer: tuple[str, str | None], domain: str) -> CertFiles:
    """A leaf for domain and *.domain signed by a CA named `issuer` (self-signed for Traefik's default)."""
    now = dt.datetime.now(dt.timezone.utc)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    self_signed = issuer == TRAEFIK_DEFAULT
    ca_key = leaf_key if self_signed else ec.generate_private_key(ec.SECP256R1())
    subject = _name(*issuer) if self_signed else _name(domain, None)
    # Traefik's own default certificate names a random *.traefik.default host, not the site.
    names = ["5f1e0c.traefik.default"] if self_signed else [domain, f"*.{domain}"]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(_name(*issuer))
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    stem = folder / f"{abs(hash((issuer, domain)))}"
    files = CertFiles(stem.with_suffix(".crt"), stem.with_suffix(".key"), stem.with_suffix(".ca.crt"))
    ca_cert = cert if self_signed else (
        x509.CertificateBuilder()
        .subject_name(_name(*issuer))
        .issuer_name(_name(*issuer))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files
