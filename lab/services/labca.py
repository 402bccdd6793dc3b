"""A small CA per lab service, and the server certificate it signs for the service's address.

A lab service that speaks HTTPS (Pebble's ACME listener, the container registry) gets a CA of
its own and one listener certificate for its fixed lab address. The CA certificate is public
(clients are told to trust it); the CA's key lives only in memory while it signs and is never
written anywhere, so nothing else can ever be signed by it. The listener key is written 0600.
"""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab import state

VALID_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=7)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def covers(cert_pem: Path, ip: str, dns_names: tuple[str, ...] = ()) -> bool:
    """The certificate names ``ip`` (and ``dns_names``) and stays valid for at least another week."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return ipaddress.ip_address(ip) in san.get_values_for_type(x509.IPAddress) and \
        set(dns_names) <= set(san.get_values_for_type(x509.DNSName)) and \
        datetime.datetime.now(datetime.timezone.utc) < cert.not_valid_after_utc - RENEW_BEFORE


def ensure_server_tls(tls_dir: Path, ca_file: Path, ca_name: str, server_name: str, ip: str,
                      dns_names: tuple[str, ...] = ()) -> bool:
    """``tls_dir``/cert.pem + key.pem for ``server_name`` at ``ip``, signed by a new CA whose
    certificate goes to ``ca_file``; made only when missing, expiring or for another address.
    ``dns_names``: more DNS names in it. Returns True when new files were made."""
    cert_path = tls_dir / "cert.pem"
    if covers(cert_path, ip, dns_names) and ca_file.exists():
        return False
    tls_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=VALID_DAYS)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(ca_name)).issuer_name(_name(ca_name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name(server_name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([*(x509.DNSName(n) for n in (server_name, *dns_names)),
                                                        x509.IPAddress(ipaddress.ip_address(ip))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    state.write_private(tls_dir / "key.pem", key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
    cert_path.write_bytes(leaf.public_bytes(pem))
    ca_file.write_bytes(ca.public_bytes(pem))
    return True
