"""Pebble, Let's Encrypt's test ACME server, as the lab's CA.

Debian's pebble ships no TLS certificate for its own listener: the lab makes a small CA and a
listener certificate for Pebble's address. The CA certificate is what Traefik (lego) is told
to trust through LEGO_CA_CERTIFICATES; its key is never written anywhere. Pebble resolves the
names it validates through the lab's DNS server and checks HTTP-01 on port 80.
"""
from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab import state
from lab.config import LabConfig
from lab.images.recipes import PEBBLE_TAG
from lab.services.containers import ensure_container, wait_until

Log = Callable[[str], None]
ROLE = "pebble"
ACME_PORT, MANAGEMENT_PORT = 14000, 15000


def tls_dir(cfg: LabConfig) -> Path:
    return cfg.state_dir.resolve() / "pebble"


def ca_path(cfg: LabConfig) -> Path:
    """The CA that signed Pebble's listener certificate (public; for LEGO_CA_CERTIFICATES)."""
    return tls_dir(cfg) / "listener-ca.pem"


def directory_url(cfg: LabConfig) -> str:
    return f"https://{cfg.pebble_ip}:{ACME_PORT}/dir"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _covers(cert_pem: Path, ip: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    ok_until = cert.not_valid_after_utc - datetime.timedelta(days=7)
    return ipaddress.ip_address(ip) in san.get_values_for_type(x509.IPAddress) and \
        datetime.datetime.now(datetime.timezone.utc) < ok_until


def ensure_listener_tls(cfg: LabConfig) -> Path:
    """CA + listener certificate for Pebble's address, made once per address."""
    directory = tls_dir(cfg)
    cert_path = directory / "tls" / "cert.pem"
    if _covers(cert_path, cfg.pebble_ip) and ca_path(cfg).exists():
        return directory
    (directory / "tls").mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(f"{cfg.name} Pebble listener CA"))
          .issuer_name(_name(f"{cfg.name} Pebble listener CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("pebble")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("pebble"),
                                                        x509.IPAddress(ipaddress.ip_address(cfg.pebble_ip))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    state.write_private(directory / "tls" / "key.pem", key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
    (directory / "tls" / "cert.pem").write_bytes(leaf.public_bytes(pem))
    ca_path(cfg).write_bytes(ca.public_bytes(pem))
    return directory


def _answers(cfg: LabConfig) -> bool:
    try:
        return requests.get(directory_url(cfg), verify=str(ca_path(cfg)), timeout=2).status_code == 200
    except requests.RequestException:
        return False


def ensure(cfg: LabConfig, log: Log = print) -> str:
    """Pebble running at cfg.pebble_ip, resolving through the lab DNS; returns its directory URL."""
    directory = ensure_listener_tls(cfg)
    name = ensure_container(cfg, ROLE, PEBBLE_TAG, cfg.pebble_ip,
                            ["-v", f"{directory / 'tls'}:/etc/pebble/tls:ro"],
                            ["pebble", "-config", "/etc/pebble/lab.json", "-dnsserver", f"{cfg.dns_ip}:53"],
                            log=log)
    wait_until(lambda: _answers(cfg), name, "ACME test CA (Pebble)")
    return directory_url(cfg)


def issuing_roots(cfg: LabConfig) -> str:
    """PEM of the root Pebble issues under now (new at every Pebble start)."""
    r = requests.get(f"https://{cfg.pebble_ip}:{MANAGEMENT_PORT}/roots/0", verify=str(ca_path(cfg)), timeout=10)
    r.raise_for_status()
    return r.text
