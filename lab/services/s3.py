"""The lab's S3 endpoint: the stand-in for DigitalOcean Spaces.

moto's server (S3 and IAM, lab/images/files/s3-server.py) at a fixed lab address, the subnet's
fourth-highest host (DNS, Pebble and the registry hold the three above it), serving HTTPS on 443
with a certificate from a CA of its own (lab/services/labca.py); clients trust ``ca_path(cfg)``.
Requests are path style (``https://<address>/<bucket>/<key>``), SigV4 signed, region ``nyc3``.

Credentials are enforced as on Spaces: moto authenticates every request once it has let
``len(SETUP)`` actions through unauthenticated (INITIAL_NO_AUTH_ACTION_COUNT). Those are the
lab's own, right after the container starts: an IAM user, its policy (s3:*) and its access key.
From then on a wrong key (InvalidAccessKeyId) or a wrong secret (SignatureDoesNotMatch) gets a
403, and the guard in front of moto refuses unsigned requests and moto's /moto-api/ (which could
switch authentication off). The bucket is then made with the new key. The key lives in moto's
memory, so it is kept exactly while the container runs: ``inv lab.up`` keeps a running S3 whose
key still works and otherwise starts a new one (objects are in memory too: a new container
starts empty). The key is written 0600 to the state folder; only ``inv lab.env`` prints it.
"""
from __future__ import annotations

import ipaddress
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

import requests

from lab import state
from lab.config import LabConfig
from lab.docker import docker, inspect
from lab.errors import LabError
from lab.images.recipes import S3_TAG
from lab.services import labca, sigv4
from lab.services.containers import container_name, ensure_container, spec_digest, wait_until

Log = Callable[[str], None]
ROLE = "s3"
BUCKET = "stackdeploy-backups"
REGION = "nyc3"
IAM_REGION = "us-east-1"        # IAM is global: its requests are signed for us-east-1
USER = "spaces"
POLICY = json.dumps({"Version": "2012-10-17",
                     "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
# The IAM actions moto lets through before it authenticates: exactly these, once, in this order.
SETUP = ({"Action": "CreateUser", "UserName": USER},
         {"Action": "PutUserPolicy", "UserName": USER, "PolicyName": "spaces", "PolicyDocument": POLICY},
         {"Action": "CreateAccessKey", "UserName": USER})
ENV_NAMES = ("SPACES_ENDPOINT", "SPACES_REGION", "SPACES_BUCKET", "SPACES_KEY", "SPACES_SECRET",
             "SPACES_TEST_CA_ROOT")


@dataclass(frozen=True)
class Credentials:
    key: str
    secret: str = field(repr=False)


def address(cfg: LabConfig) -> str:
    """The endpoint's IPv4 address: the subnet's fourth-highest host (port 443)."""
    return str(ipaddress.ip_network(cfg.subnet).broadcast_address - 4)


def s3_dir(cfg: LabConfig) -> Path:
    return cfg.state_dir.resolve() / "s3"


def ca_path(cfg: LabConfig) -> Path:
    """The CA that signed the endpoint's certificate (public): what clients must trust."""
    return s3_dir(cfg) / "ca.pem"


def credentials_path(cfg: LabConfig) -> Path:
    return s3_dir(cfg) / "credentials.json"


def read_credentials(cfg: LabConfig) -> Credentials | None:
    try:
        data = json.loads(credentials_path(cfg).read_text())
        return Credentials(data["key"], data["secret"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def request(cfg: LabConfig, method: str, path: str, creds: Credentials, region: str = REGION,
            service: str = "s3", body: bytes = b"", headers: dict[str, str] | None = None,
            timeout: float = 10) -> requests.Response:
    """One SigV4-signed request to the endpoint, TLS verified against the lab CA."""
    url = f"https://{address(cfg)}{path}"
    signed = sigv4.signed_headers(method, url, region, service, creds.key, creds.secret, body, headers)
    return requests.request(method, url, data=body, headers=signed, verify=str(ca_path(cfg)), timeout=timeout)


def answers(cfg: LabConfig) -> bool:
    """The endpoint serves HTTPS with the lab CA's certificate (an unsigned request: 403)."""
    try:
        return requests.get(f"https://{address(cfg)}/", verify=str(ca_path(cfg)), timeout=2).status_code == 403
    except requests.RequestException:
        return False


def works(cfg: LabConfig, creds: Credentials) -> bool:
    """The key is accepted and the bucket is there."""
    try:
        return request(cfg, "HEAD", f"/{BUCKET}", creds, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _bucket_answer(cfg: LabConfig, creds: Credentials) -> int:
    """works(), but 403/404 (moto no longer knows the key or the bucket) apart from no answer at
    all, which is an error and no reason to start afresh (that would empty the bucket)."""
    try:
        return request(cfg, "HEAD", f"/{BUCKET}", creds, timeout=20).status_code
    except requests.RequestException as exc:
        raise LabError(f"the lab S3 endpoint at {address(cfg)} did not answer ({type(exc).__name__}); "
                       "it is left as it is: run `inv lab.up` again") from None


def _error(what: str, r: requests.Response) -> LabError:
    # S3's error code only: moto's messages can name the access key.
    try:
        code = next((el.text for el in ET.fromstring(r.content).iter() if el.tag.rsplit("}", 1)[-1] == "Code"), "")
    except ET.ParseError:
        code = ""
    return LabError(f"the lab S3 endpoint refused {what}: HTTP {r.status_code} {code or ''}".rstrip())


def _set_up(cfg: LabConfig) -> Credentials:
    """User, policy and key through the actions moto lets through, then the bucket with the key."""
    anyone = Credentials("AKIALABSETUP", "unchecked")   # moto checks no signature for these
    created = None
    for action in SETUP:
        body = urlencode({**action, "Version": "2010-05-08"}).encode()
        r = request(cfg, "POST", "/", anyone, IAM_REGION, "iam", body,
                    {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        if r.status_code != 200:
            raise _error(f"the lab's {action['Action']}", r)
        created = r
    found = {el.tag.rsplit("}", 1)[-1]: el.text for el in ET.fromstring(created.content).iter()}
    creds = Credentials(found["AccessKeyId"], found["SecretAccessKey"])
    location = ("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                f"<LocationConstraint>{REGION}</LocationConstraint></CreateBucketConfiguration>").encode()
    r = request(cfg, "PUT", f"/{BUCKET}", creds, body=location)
    if r.status_code != 200:
        raise _error(f"creating the bucket {BUCKET}", r)
    return creds


def state_of(cfg: LabConfig) -> str:
    """running, paused, unreachable (off the lab network: an outage), absent, or docker's status."""
    info = inspect("container", container_name(cfg, ROLE))
    if not info:
        return "absent"
    if info["State"].get("Paused"):
        return "paused"
    if info["State"].get("Running") and cfg.network not in (info["NetworkSettings"].get("Networks") or {}):
        return "unreachable"
    return info["State"].get("Status", "unknown")


def _restore(cfg: LabConfig, wait: bool = True) -> None:
    """Undo an outage (an interrupted test's too): unpaused and back at its address, answering.
    (Right after a reconnect the host can still hold the failed neighbour entry of the outage.)"""
    now, name = state_of(cfg), container_name(cfg, ROLE)
    if now == "paused":
        docker("unpause", name)
    elif now == "unreachable":
        docker("network", "connect", "--ip", address(cfg), cfg.network, name)
    if wait and now in ("paused", "unreachable"):
        wait_until(lambda: answers(cfg), name, "S3 endpoint (moto), back from an outage")


def _container_id(cfg: LabConfig) -> str | None:
    return (inspect("container", container_name(cfg, ROLE)) or {}).get("Id")


def ensure(cfg: LabConfig, log: Log = print) -> str:
    """The endpoint running at address(cfg) with a working key and the bucket; returns the address."""
    ip, folder = address(cfg), s3_dir(cfg)
    state.ensure_dir(cfg.state_dir)
    # The address as a DNS name too: pgBackRest before 2.46 (Debian 12 has 2.45) matches only
    # DNS names against the endpoint, even an IP address (pgbackrest/pgbackrest#1977).
    labca.ensure_server_tls(folder / "tls", ca_path(cfg), f"{cfg.name} S3 CA", ROLE, ip, dns_names=(ip,))
    folder.chmod(0o700)
    _restore(cfg, wait=False)           # start() below waits (and replaces it if it must)
    run_args = ["-v", f"{folder / 'tls'}:/etc/lab-s3/tls:ro", "-e", f"INITIAL_NO_AUTH_ACTION_COUNT={len(SETUP)}"]

    def start() -> str:
        name = ensure_container(cfg, ROLE, S3_TAG, ip, run_args, log=log,
                                content=spec_digest((folder / "tls" / "cert.pem").read_text()))
        wait_until(lambda: answers(cfg), name, "S3 endpoint (moto)", timeout=60)
        return name

    before = _container_id(cfg)
    name = start()
    creds = read_credentials(cfg)
    if _container_id(cfg) == before:
        if creds and _bucket_answer(cfg, creds) == 200:
            return ip
        # Kept, but its memory is not what the state folder says (the engine restarted it, or
        # a setup failed half way): only a new moto counts its unauthenticated actions from 0.
        docker("rm", "-f", "-v", name)
        start()
    creds = _set_up(cfg)
    state.write_private(credentials_path(cfg), json.dumps({"key": creds.key, "secret": creds.secret}))
    return ip


def env_values(cfg: LabConfig) -> dict[str, str]:
    """The Spaces settings for this endpoint (the names the deployer reads)."""
    creds = read_credentials(cfg)
    if not creds:
        raise LabError(f"the lab's S3 endpoint has no access key in {s3_dir(cfg)}: run `inv lab.up`")
    return dict(zip(ENV_NAMES, (address(cfg), REGION, BUCKET, creds.key, creds.secret, str(ca_path(cfg)))))


@contextmanager
def outage(cfg: LabConfig, how: Literal["unreachable", "frozen"] = "unreachable") -> Iterator[None]:
    """The endpoint out of reach inside the block, back with its key and objects after.

    ``unreachable``: off the lab network, so a connection fails within seconds (no route to
    host), as when the network is down. ``frozen``: paused, so a connection is accepted and then
    nothing answers until the client's own timeout, as a hung server."""
    name = container_name(cfg, ROLE)
    if how == "frozen":
        docker("pause", name)
    else:
        docker("network", "disconnect", "--force", cfg.network, name)
    try:
        yield
    finally:
        _restore(cfg)
