"""The lab's container registry: the stand-in for DigitalOcean Container Registry (DOCR).

Debian's docker-registry (distribution 2.8) at a fixed lab address, the subnet's third-highest
host (the DNS server and Pebble hold the two highest), on port 443 so that image references
look like DOCR's: ``<address>/<registry name>/<repository>:<tag>`` for
``registry.digitalocean.com/<registry name>/<repository>:<tag>``.

Like DOCR, it wants a login and takes the account's API token as both user name and password
(``docker login <address> -u TOKEN -p TOKEN``): htpasswd with one bcrypt line whose user is the
lab's API token. That file is as private as the lab's state.json, which holds the token too:
0600 in the state folder, mounted read-only. The registry logs warnings and errors, never the
access log, and its entrypoint masks the user names (the token) in them: distribution names the
user on its error lines.

It serves HTTPS with a certificate from a CA of its own (lab/services/labca.py); clients trust
``ca_path(cfg)``: a Docker engine as /etc/docker/certs.d/<address>/ca.crt. Pushed images live in
a labelled volume, so they survive a restart and `lab.down` removes them.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import requests

import bcrypt

from lab import state, stackenv
from lab.config import LabConfig
from lab.docker import docker
from lab.images.recipes import REGISTRY_TAG
from lab.services import labca
from lab.services.containers import KIND_LABEL, ensure_container, spec_digest, wait_until

Log = Callable[[str], None]
ROLE = "registry"
CONFIG_DIR = "/etc/docker/registry"
DATA_DIR = "/var/lib/docker-registry"
# distribution checks the bcrypt hash on every request (a push makes dozens): at the default
# cost 12 a tiny image took 20 s to push here. The cost slows guessing a password; the lab's
# token is 256 random bits, which no guessing reaches at any cost.
BCRYPT_ROUNDS = 4


def address(cfg: LabConfig) -> str:
    """The registry's IPv4 address: the subnet's third-highest host."""
    return str(ipaddress.ip_network(cfg.subnet).broadcast_address - 3)


def server(cfg: LabConfig) -> str:
    """What `docker login` and image references name (port 443, so no port): DOCR's
    registry.digitalocean.com in the lab."""
    return address(cfg)


def registry_dir(cfg: LabConfig) -> Path:
    return cfg.state_dir.resolve() / "registry"


def ca_path(cfg: LabConfig) -> Path:
    """The CA that signed the registry's certificate (public): what droplets must trust."""
    return registry_dir(cfg) / "ca.pem"


def htpasswd_path(cfg: LabConfig) -> Path:
    return registry_dir(cfg) / "auth" / "htpasswd"


def volume_name(cfg: LabConfig) -> str:
    return f"{cfg.name}-registry-data"


def ensure_htpasswd(cfg: LabConfig, token: str) -> bool:
    """One bcrypt htpasswd line, user and password the API token; True when (re)written."""
    path = htpasswd_path(cfg)
    try:
        if stackenv.htpasswd_matches(path.read_text().strip(), token, token):
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    hashed = bcrypt.hashpw(token.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()
    state.write_private(path, f"{token}:{hashed}\n")
    return True


def answers(cfg: LabConfig, token: str) -> bool:
    """The registry's API root accepts the token over HTTPS verified against ca_path."""
    try:
        return requests.get(f"https://{server(cfg)}/v2/", auth=(token, token), verify=str(ca_path(cfg)),
                            timeout=2).status_code == 200
    except requests.RequestException:
        return False


def ensure(cfg: LabConfig, token: str, log: Log = print) -> str:
    """The registry running at address(cfg), accepting ``token``; returns its server name."""
    ip = address(cfg)
    state.ensure_dir(cfg.state_dir)
    labca.ensure_server_tls(registry_dir(cfg) / "tls", ca_path(cfg), f"{cfg.name} registry CA", ROLE, ip)
    ensure_htpasswd(cfg, token)
    docker("volume", "create", "--label", cfg.label, "--label", f"{KIND_LABEL}={ROLE}", volume_name(cfg))
    # distribution reads its certificate and htpasswd at start only: new ones, a new container.
    name = ensure_container(cfg, ROLE, REGISTRY_TAG, ip,
                            ["-v", f"{registry_dir(cfg) / 'tls'}:{CONFIG_DIR}/tls:ro",
                             "-v", f"{htpasswd_path(cfg).parent}:{CONFIG_DIR}/auth:ro",
                             "-v", f"{volume_name(cfg)}:{DATA_DIR}"], log=log,
                            content=spec_digest((registry_dir(cfg) / "tls" / "cert.pem").read_text(),
                                                htpasswd_path(cfg).read_text()))
    wait_until(lambda: answers(cfg, token), name, "container registry")
    return server(cfg)
