"""Pebble, Let's Encrypt's test ACME server, as the lab's CA.

Debian's pebble ships no TLS certificate for its own listener: the lab makes a small CA and a
listener certificate for Pebble's address. The CA certificate is what Traefik (lego) is told
to trust through LEGO_CA_CERTIFICATES; its key is never written anywhere. Pebble resolves the
names it validates through the lab's DNS server and checks HTTP-01 on port 80.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import requests

from lab.config import LabConfig
from lab.images.recipes import PEBBLE_TAG
from lab.services import labca
from lab.services.containers import ensure_container, spec_digest, wait_until

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


def ensure_listener_tls(cfg: LabConfig) -> Path:
    """CA + listener certificate for Pebble's address, made once per address."""
    directory = tls_dir(cfg)
    labca.ensure_server_tls(directory / "tls", ca_path(cfg), f"{cfg.name} Pebble listener CA", "pebble",
                            cfg.pebble_ip)
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
                            log=log, content=spec_digest((directory / "tls" / "cert.pem").read_text()))
    wait_until(lambda: _answers(cfg), name, "ACME test CA (Pebble)")
    return directory_url(cfg)


def issuing_roots(cfg: LabConfig) -> str:
    """PEM of the root Pebble issues under now (new at every Pebble start)."""
    r = requests.get(f"https://{cfg.pebble_ip}:{MANAGEMENT_PORT}/roots/0", verify=str(ca_path(cfg)), timeout=10)
    r.raise_for_status()
    return r.text
