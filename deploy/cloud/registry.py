"""DigitalOcean Container Registry (DOCR): the registry a release's images go through when the
stack runs on several droplets (built once on the swarm leader, pushed, pulled by the others).

python-digitalocean has no registry support: this module speaks the API's `/v2/registry` paths
with plain requests, and goes through deploy/cloud/api.py's `_call` for the same bounded retries,
Retry-After handling and error classification (a failed answer is raised as the library's
error types, with the response as `req` in the raising frame, which is where `_call` looks).

An account has one registry on this API (`/v2/registry`); its name is part of every image
reference: ``registry.digitalocean.com/<registry>/<repository>:<tag>``. The Docker credentials
DigitalOcean hands out are a token as both user and password; they are secrets, registered with
the run's redaction registry the moment they arrive and kept in `Secret` objects.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any

import requests

from deploy.cloud.api import (ENDPOINT_VAR, CloudError, CloudSpec, DataReadError, JSONReadError, NotFoundError,
                              OnEvent, TokenError, _call, _log_event)
from deploy.redact import REGISTRY, Secret, SecretRegistry

DOCR_SERVER = "registry.digitalocean.com"
DEFAULT_ENDPOINT = "https://api.digitalocean.com/v2/"
TIERS = ("starter", "basic", "professional")
# Where DOCR keeps data (registry_create's enum); another droplet region lets DigitalOcean choose.
REGIONS = ("nyc3", "sfo3", "ams3", "sgp1", "fra1")
_NAME = re.compile(r"^[a-z0-9-]{1,63}$")
# Docker's reference grammar: path components of lowercase alphanumerics and separators, a tag
# of word characters, dots and dashes up to 128 long.
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
NAME_HINT = ("set the registry name to 1-63 lowercase letters, digits and dashes; it becomes part of every "
             "image reference, registry.digitalocean.com/<name>/...")


@dataclass(frozen=True)
class RegistryInfo:
    name: str
    region: str
    tier: str                   # subscription tier slug: starter | basic | professional
    created: bool               # this call created it


@dataclass(frozen=True)
class RegistryLogin:
    """What `docker` needs to push and pull: the server and its config.json `auth` value
    (base64 of user:password), a Secret."""

    server: str
    auth: Secret

    def __post_init__(self) -> None:
        if not isinstance(self.auth, Secret):
            raise TypeError("RegistryLogin.auth must be a Secret")


def image_ref(server: str, registry_name: str, repository: str, tag: str) -> str:
    """``<server>/<registry>/<repository>:<tag>``, as DOCR names an image."""
    if not server or "/" in server or server != server.strip():
        raise ValueError(f"registry server {server!r} must be a host name or address, with an optional port")
    if not _NAME.match(registry_name):
        raise ValueError(f"registry name {registry_name!r}: {NAME_HINT}")
    if not _REPOSITORY.match(repository):
        raise ValueError(f"repository {repository!r} is not a Docker repository name (lowercase letters, "
                         "digits and . _ - separators, / between path components)")
    if not _TAG.match(tag):
        raise ValueError(f"tag {tag!r} is not a Docker tag (letters, digits, _ . -; 128 at most, "
                         "not starting with . or -)")
    return f"{server}/{registry_name}/{repository}:{tag}"


# --- the API ----------------------------------------------------------------------------------
def _endpoint(spec: CloudSpec) -> str:
    endpoint = spec.endpoint or os.environ.get(ENDPOINT_VAR) or DEFAULT_ENDPOINT
    if not re.match(r"^https?://[^/]+/(.*/)?v2/$", endpoint):
        raise CloudError(f"API endpoint {endpoint!r} is not a DigitalOcean API base URL",
                         "set DIGITALOCEAN_END_POINT to a URL ending in /v2/, or unset it")
    return endpoint


def _request(spec: CloudSpec, method: str, path: str, params: dict | None = None,
             body: dict | None = None) -> Any:
    """One API request; a failure raises python-digitalocean's error for the same answer."""
    if not spec.token:
        raise TokenError("No token provided. Please use a valid token")
    req = requests.request(method, _endpoint(spec) + path, params=params, json=body, timeout=spec.request_timeout,
                           headers={"Authorization": f"Bearer {spec.token}", "Content-Type": "application/json"})
    if req.status_code == 204:
        return None
    if req.status_code == 404:
        raise NotFoundError()
    try:
        data = req.json()
    except ValueError as exc:
        raise JSONReadError(f"Read failed from DigitalOcean: {exc}") from None
    if not req.ok:
        raise DataReadError(str(data.get("message") or data.get("id") or f"HTTP {req.status_code}")
                            if isinstance(data, dict) else f"HTTP {req.status_code}")
    return data


def _info(data: dict, created: bool) -> RegistryInfo:
    registry = data["registry"]
    return RegistryInfo(name=registry["name"], region=registry.get("region") or "",
                        tier=((registry.get("subscription") or {}).get("tier") or {}).get("slug") or "",
                        created=created)


def get_registry(spec: CloudSpec, on_event: OnEvent = _log_event) -> RegistryInfo | None:
    """The account's registry, or None when it has none."""
    data = _call(spec, "reading the container registry", lambda: _request(spec, "GET", "registry"), on_event,
                 missing_ok=True)
    return None if data is None else _info(data, created=False)


def ensure_registry(spec: CloudSpec, name: str, tier: str = "basic",
                    on_event: OnEvent = _log_event) -> RegistryInfo:
    """The account's registry named ``name``: found, or created in the droplets' region when DOCR
    has one there (else where DigitalOcean chooses). An account whose registry has another name
    is an error: an account has one registry, and its name is in every image reference."""
    if not _NAME.match(name):
        raise CloudError(f"container registry name {name!r} is not valid", NAME_HINT)
    if tier not in TIERS:
        raise CloudError(f"container registry tier {tier!r} is not one of {', '.join(TIERS)}",
                         "choose a subscription tier DigitalOcean offers")
    found = get_registry(spec, on_event)
    if found is None:
        body = {"name": name, "subscription_tier_slug": tier}
        if spec.region in REGIONS:
            body["region"] = spec.region

        def create() -> Any:
            return _request(spec, "POST", "registry", body=body)

        def created_meanwhile() -> RegistryInfo | None:   # the POST's answer was lost, not its effect
            seen = get_registry(spec, on_event)
            return None if seen is None else dataclasses.replace(seen, created=True)
        try:
            data = _call(spec, f"creating the container registry {name}", create, on_event,
                         before_retry=created_meanwhile)
        except CloudError:
            found = get_registry(spec, on_event)   # another deploy created it first (409)
            if found is None:
                raise
        else:
            found = data if isinstance(data, RegistryInfo) else _info(data, created=True)
    if found.name != name:
        raise CloudError(f"this DigitalOcean account's container registry is named {found.name!r}, not {name!r}",
                         f"an account has one registry: set the registry name to {found.name!r}, or delete that "
                         "registry (and its images) in the control panel first")
    return found


def docker_credentials(spec: CloudSpec, expiry_seconds: int = 0, registry: SecretRegistry = REGISTRY,
                       on_event: OnEvent = _log_event, read_write: bool = True) -> RegistryLogin:
    """Docker credentials for the account's registry: read-write to push, read-only
    (``read_write=False``) for what only pulls (``expiry_seconds`` > 0: they stop working after
    that long). The auth and the user and password inside it are registered with ``registry``
    before anything else sees them."""
    params: dict[str, Any] = {"read_write": "true" if read_write else "false"}
    if expiry_seconds:
        params["expiry_seconds"] = int(expiry_seconds)
    data = _call(spec, "reading the container registry's Docker credentials",
                 lambda: _request(spec, "GET", "registry/docker-credentials", params=params), on_event,
                 missing_ok=True)
    if data is None:
        raise CloudError("this DigitalOcean account has no container registry to log in to",
                         "create it first (ensure_registry), then ask for its Docker credentials")
    auths = data.get("auths") if isinstance(data, dict) else None
    entries = [(server, entry.get("auth")) for server, entry in (auths or {}).items() if isinstance(entry, dict)]
    if len(entries) != 1 or not isinstance(entries[0][1], str) or not entries[0][1]:
        raise CloudError("DigitalOcean answered the Docker credentials request without one registry login",
                         "create the container registry first; check DIGITALOCEAN_END_POINT points at the API")
    server, auth = entries[0]
    registry.add_value(auth)
    try:
        user, _, password = base64.b64decode(auth, validate=True).decode().rstrip("\n").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise CloudError("DigitalOcean's Docker credentials are not base64 user:password",
                         "check DIGITALOCEAN_END_POINT points at the real API (or the lab's)") from None
    registry.add_value(user)
    registry.add_value(password)
    return RegistryLogin(server=server, auth=Secret(auth))
