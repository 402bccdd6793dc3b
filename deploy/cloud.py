"""DigitalOcean adapter: the only module that imports `digitalocean`.

Pure data in (CloudSpec), pure data out (ProvisionResult); typed errors (CloudError and
subclasses) carry a message and an actionable hint and never the token. Every API call
goes through `_call`, which retries transient failures (429, 5xx, timeouts, connection
errors) with exponential backoff + jitter, bounded by attempts and total time, honouring
Retry-After / ratelimit-reset.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import ipaddress
import logging
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TypeVar

import digitalocean
import requests
from digitalocean.baseapi import (DataReadError, EndPointError, JSONReadError, NotFoundError,
                                  TokenError)

from .cloud_init import CloudInitError, build_user_data
from . import hostkey
from .hostkey import HostKey
from .redact import SecretRegistry
from deploy.errors import EXIT_CONFIG, EXIT_LOCKED, EXIT_TOKEN_REJECTED, OperatorError

DEFAULT_IMAGE = "ubuntu-24-04-x64"
DEFAULT_OPERATOR_IP_URL = "https://api.ipify.org"
ENDPOINT_VAR = "DIGITALOCEAN_END_POINT"
TIMEOUT_VAR = "PYTHON_DIGITALOCEAN_REQUEST_TIMEOUT_SEC"
ANYWHERE = ("0.0.0.0/0", "::/0")
# IPv6 is off (README, Security): Docker's networks here are IPv4-only, so IPv6 clients would
# reach Traefik as one bridge address and share one rate-limit bucket and allowlist identity.
# Droplets are created without IPv6, only A records are made, and 80/443 admit IPv4 only
# (which also closes IPv6 on a droplet an older release created with it).
WEB_SOURCES = ("0.0.0.0/0",)
DNS_TTL = 300
TOKEN_CHECK_BUDGET = 5.0  # seconds of retrying allowed while checking the token
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
TOKEN_HINT = ("create a read+write token at https://cloud.digitalocean.com/account/api/tokens "
              "and set DIGITALOCEAN_TOKEN in your .env")

log = logging.getLogger(__name__)
T = TypeVar("T")
OnEvent = Callable[[str, str], None]


def _log_event(level: str, message: str) -> None:
    log.log(logging.WARNING if level == "warning" else logging.INFO, message)


# --- data in / out ----------------------------------------------------------------------
@dataclass(frozen=True)
class CloudSpec:
    token: str = field(repr=False)
    droplet_name: str
    region: str = "fra1"
    size: str = "s-2vcpu-4gb"
    image: str = DEFAULT_IMAGE
    tags: tuple[str, ...] = ()
    ssh_public_key: str = ""
    ssh_key_name: str = "stackdeploy"
    deploy_user: str = "deploy"
    host_key: HostKey | None = None     # the new droplet's SSH host key (deploy/hostkey.py)
    base_dir: str = "/opt/stackdeploy"  # release root cloud-init hands to deploy_user
    domain: str | None = None
    subdomains: tuple[str, ...] = ()
    firewall_enabled: bool = True
    operator_ip_url: str = DEFAULT_OPERATOR_IP_URL
    operator_ip_timeout: float = 5.0
    extra_ssh_cidrs: tuple[str, ...] = ()
    request_timeout: float = 15.0
    active_timeout: float = 300.0       # seconds for a new droplet to report "active"
    ssh_wait_timeout: float = 300.0     # seconds for its sshd to send a banner (<=0: don't wait)
    max_retries: int = 5                # retries after the first attempt, per API call
    endpoint: str | None = None         # e.g. the lab's fake API; must end in /v2/
    ssh_port: int = 22
    retry_base_delay: float = 0.5       # first backoff step; doubles per retry, with jitter
    retry_max_total: float = 120.0      # no API call keeps retrying longer than this
    operator: str = ""                  # user@host of this run, named on the droplet's presence tag
    allowlist_ttl: float = 3 * 3600.0   # seconds an operator stays allowed after their last provision
    nodes: int = 1                      # droplets in the cluster (provision_cluster); 1: one droplet, no Swarm


@dataclass(frozen=True)
class AccountInfo:
    email: str
    uuid: str
    droplet_limit: int


@dataclass(frozen=True)
class DropletInfo:
    id: int
    name: str
    region: str
    size: str
    status: str
    public_ipv4: str | None
    created: bool
    private_ipv4: str | None = None     # its VPC address (what Swarm nodes talk over)


@dataclass(frozen=True)
class FirewallResult:
    status: str                 # created | updated | unchanged | skipped
    operator_ip: str | None
    rules: list[dict]           # the inbound rules now in force ([] when skipped)


@dataclass(frozen=True)
class DnsResult:
    status: str                 # managed | unmanaged | skipped
    records_changed: list[dict]  # {"name", "action": created|updated, "from", "to"}
    warning: str | None


@dataclass(frozen=True)
class ProvisionResult:
    droplet: DropletInfo
    firewall: FirewallResult
    dns: DnsResult
    warnings: list[str]
    changed: bool
    ssh_ready: bool = False
    ssh_key_registered: bool = False


class CloudError(OperatorError):
    """A provisioning failure the operator can act on. Never carries the token."""


class TokenMissing(CloudError):
    exit_code = EXIT_CONFIG
    outcome = "config-error"


class TokenRejected(CloudError):
    """DigitalOcean refused the API token (401/403)."""

    exit_code = EXIT_TOKEN_REJECTED
    outcome = "config-error"


class CloudUnavailable(CloudError):
    """Transient failures (429, 5xx, timeouts) outlasted the retry budget."""


class ConcurrentDeploy(CloudError):
    """Another deploy created the droplet at the same time and came first."""

    exit_code = EXIT_LOCKED


class _Transient(Exception):
    def __init__(self, summary: str, retry_after: float | None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.retry_after = retry_after


# --- library plumbing -------------------------------------------------------------------
class _EnvGate:
    """Shares the process environment between adapter calls: calls that need the same values
    run at once (two provisions in one process really overlap), a call that needs others waits
    until the last user of the current values is done, which then restores what was there."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._values: tuple[tuple[str, str | None], ...] | None = None
        self._users = 0
        self._saved: dict[str, str | None] = {}

    @contextlib.contextmanager
    def use(self, values: dict[str, str | None]) -> Iterator[None]:
        """``values``: variable -> value (None: leave it as it is). Not re-entrant with other
        values from the same thread (nothing in the adapter does that)."""
        wanted = tuple(sorted(values.items()))
        with self._cond:
            self._cond.wait_for(lambda: self._users == 0 or self._values == wanted)
            if self._users == 0:
                self._values = wanted
                self._saved = {k: os.environ.get(k) for k in values}
                for key, value in values.items():
                    if value is not None:
                        os.environ[key] = value
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    for key, old in self._saved.items():
                        if old is None:
                            os.environ.pop(key, None)
                        else:
                            os.environ[key] = old
                    self._values = None
                    self._cond.notify_all()


_ENV = _EnvGate()


@contextlib.contextmanager
def _library_env(spec: CloudSpec) -> Iterator[None]:
    """Point python-digitalocean at spec.endpoint and spec.request_timeout.

    The library reads DIGITALOCEAN_END_POINT in every BaseAPI.__init__, including objects
    it builds internally (Droplet rows of a list, SSHKey during Droplet.create), and the
    timeout variable on every request, so an env var is the only setting that reaches all
    of them. Set for the duration of one adapter call, restored afterwards.
    """
    if spec.endpoint is not None and not re.match(r"^https?://[^/]+/(.*/)?v2/$", spec.endpoint):
        raise CloudError(f"API endpoint {spec.endpoint!r} is not a DigitalOcean API base URL",
                         "set DIGITALOCEAN_END_POINT to a URL ending in /v2/, or unset it")
    with _ENV.use({ENDPOINT_VAR: spec.endpoint or None, TIMEOUT_VAR: str(spec.request_timeout)}):
        yield


def _scrub(text: str, spec: CloudSpec) -> str:
    return text.replace(spec.token, "***") if spec.token else text


def _response_of(exc: BaseException) -> requests.Response | None:
    """The HTTP response behind a library error.

    python-digitalocean raises DataReadError with only the body's message; the status
    and headers (Retry-After) are still in the `req` local of the frame that raised.
    """
    tb = exc.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("req")
        if isinstance(candidate, requests.Response):
            return candidate
        tb = tb.tb_next
    return None


def _retry_after(resp: requests.Response | None) -> float | None:
    if resp is None:
        return None
    value = resp.headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    reset = resp.headers.get("ratelimit-reset")
    if resp.status_code == 429 and reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return None


def _classify(exc: BaseException, what: str, spec: CloudSpec) -> Exception:
    """Turn a library/transport error into CloudError (final) or _Transient (retry)."""
    if isinstance(exc, TokenError):
        return TokenMissing("DigitalOcean API token is missing", TOKEN_HINT)
    if isinstance(exc, EndPointError):
        return CloudError("the DigitalOcean API endpoint is not a valid URL",
                          "set DIGITALOCEAN_END_POINT to a URL ending in /v2/, or unset it")
    if isinstance(exc, (requests.Timeout, requests.ConnectionError)):
        return _Transient(f"{type(exc).__name__} (no answer within {spec.request_timeout:g} s "
                          "or connection refused)", None)
    resp = _response_of(exc)
    status = resp.status_code if resp is not None else None
    message = _scrub(str(exc), spec).rstrip(".") or type(exc).__name__
    if isinstance(exc, JSONReadError):
        if status is None or status >= 500 or status == 429:
            return _Transient(f"HTTP {status}: unreadable answer", _retry_after(resp))
        return CloudError(f"DigitalOcean answered {what} with an unreadable HTTP {status}",
                          "check DIGITALOCEAN_END_POINT points at the API")
    if isinstance(exc, NotFoundError):
        return CloudError(f"DigitalOcean has no such resource while {what}",
                          "it was probably deleted meanwhile; run the command again")
    if isinstance(exc, DataReadError):
        if status == 401 or (status is None and "authenticate" in message.lower()):
            return TokenRejected("DigitalOcean rejected the API token (401 Unauthorized)",
                                 "the token is wrong, expired or revoked; " + TOKEN_HINT)
        if status == 403:
            return TokenRejected(f"the API token may not do this while {what} (403: {message})",
                                 "use a token with read+write scope; " + TOKEN_HINT)
        if status is not None and (status == 429 or status >= 500):
            return _Transient(f"HTTP {status}: {message}", _retry_after(resp))
        return CloudError(f"DigitalOcean refused {what}"
                          + (f" (HTTP {status})" if status else "") + f": {message}",
                          "check the droplet/region/size/image/domain settings named in the message")
    if isinstance(exc, (KeyError, IndexError, TypeError)):
        return CloudError(f"unexpected answer from the DigitalOcean API while {what}",
                          "check DIGITALOCEAN_END_POINT points at the real API (or the lab's)")
    return exc if isinstance(exc, Exception) else CloudError(str(exc))


def _call(spec: CloudSpec, what: str, fn: Callable[[], T], on_event: OnEvent = _log_event,
          missing_ok: bool = False, before_retry: Callable[[], T | None] | None = None
          ) -> T | None:
    """Run one library call with bounded retries of transient failures.

    missing_ok: a 404 returns None. before_retry: asked before each retry; a non-None
    answer ends the call with that value (lets a non-idempotent POST check its effect).
    """
    deadline = time.monotonic() + spec.retry_max_total
    attempt = 0
    while True:
        try:
            return fn()
        except NotFoundError:
            if missing_ok:
                return None
            raise _classify(NotFoundError(), what, spec) from None
        except CloudError:
            raise
        except Exception as exc:  # classified below; unknown types are re-raised as is
            failure = _classify(exc, what, spec)
            if not isinstance(failure, _Transient):
                raise failure from None  # `from None`: the chained error may hold request data
        attempt += 1
        wait = failure.retry_after
        if wait is None:
            wait = spec.retry_base_delay * (2 ** (attempt - 1)) * (0.5 + random.random())
        if attempt > spec.max_retries or time.monotonic() + wait > deadline:
            raise CloudUnavailable(
                f"the DigitalOcean API kept failing while {what}: {failure.summary} "
                f"({attempt} attempt{'s' if attempt > 1 else ''})",
                "DigitalOcean may be degraded (https://status.digitalocean.com) or rate "
                "limiting this token; wait a few minutes and run again") from None
        on_event("warning", f"{what}: {failure.summary}; retry {attempt}/{spec.max_retries} "
                            f"in {wait:.1f} s")
        time.sleep(wait)
        if before_retry is not None:
            done = before_retry()
            if done is not None:
                return done


def _manager(spec: CloudSpec) -> Any:
    return digitalocean.Manager(token=spec.token)


# --- token, lookup ----------------------------------------------------------------------
def check_token(spec: CloudSpec, on_event: OnEvent = _log_event) -> AccountInfo:
    """Fail fast (TokenMissing / TokenRejected) before anything else touches the API."""
    if not spec.token or not spec.token.strip():
        raise TokenMissing("DIGITALOCEAN_TOKEN is not set: the DigitalOcean API token is missing", TOKEN_HINT)
    # Bounded tighter than other calls: an unusable API must not stall the start of a run.
    quick = dataclasses.replace(spec, retry_max_total=min(spec.retry_max_total, TOKEN_CHECK_BUDGET))
    with _library_env(spec):
        acct = _call(quick, "checking the API token",
                     lambda: digitalocean.Account.get_object(api_token=spec.token), on_event)
    return AccountInfo(email=acct.email or "", uuid=acct.uuid or "",
                       droplet_limit=int(acct.droplet_limit or 0))


def public_ipv4(networks: dict | None) -> str | None:
    """The droplet's public IPv4: type == "public", wherever it is listed."""
    for net in (networks or {}).get("v4") or []:
        if net.get("type") == "public" and net.get("ip_address"):
            return net["ip_address"]
    return None


def private_ipv4(networks: dict | None) -> str | None:
    """The droplet's VPC IPv4: type == "private", wherever it is listed."""
    for net in (networks or {}).get("v4") or []:
        if net.get("type") == "private" and net.get("ip_address"):
            return net["ip_address"]
    return None


def _info(droplet: Any, created: bool) -> DropletInfo:
    region = droplet.region.get("slug") if isinstance(droplet.region, dict) else droplet.region
    return DropletInfo(id=int(droplet.id), name=droplet.name, region=str(region),
                       size=str(getattr(droplet, "size_slug", "") or ""), status=droplet.status,
                       public_ipv4=public_ipv4(droplet.networks), created=created,
                       private_ipv4=private_ipv4(droplet.networks))


def _named(spec: CloudSpec, on_event: OnEvent) -> list[Any]:
    """Our droplets with DROPLET_NAME (carrying the first tag), oldest (lowest id) first."""
    tag = spec.tags[0] if spec.tags else None
    listed = _call(spec, "listing droplets",
                   lambda: _manager(spec).get_all_droplets(tag_name=tag), on_event)
    matches = [d for d in listed if d.name == spec.droplet_name]
    if not matches and tag:
        # A same-name droplet without our tag is somebody else's: never adopt or duplicate it.
        every = _call(spec, "listing droplets", lambda: _manager(spec).get_all_droplets(), on_event)
        if any(d.name == spec.droplet_name and tag not in (d.tags or []) for d in every):
            raise CloudError(f"a droplet named {spec.droplet_name!r} exists without tag {tag!r}",
                             f"add the tag {tag!r} to it in the control panel to adopt it, "
                             "or set DROPLET_NAME to another name")
        matches = [d for d in every if d.name == spec.droplet_name]  # ours, created meanwhile
    return sorted(matches, key=lambda d: int(d.id))


def _one_named(name: str, matches: list[Any]) -> Any | None:
    if len(matches) > 1:
        ids = ", ".join(str(d.id) for d in matches)
        raise CloudError(f"{len(matches)} droplets are named {name!r} (ids {ids})",
                         "if another deploy is creating the droplet right now, wait a minute and run again "
                         "(the newer one deletes itself); otherwise delete or rename the extra droplets, "
                         "or set DROPLET_NAME to a unique name")
    return matches[0] if matches else None


def _find(spec: CloudSpec, on_event: OnEvent) -> Any | None:
    return _one_named(spec.droplet_name, _named(spec, on_event))


def find_droplet(spec: CloudSpec) -> DropletInfo | None:
    """Read-only lookup by name (and first tag); None when absent."""
    with _library_env(spec):
        droplet = _find(spec, _log_event)
    _refuse_swarm_leader(spec, droplet)
    return _info(droplet, created=False) if droplet else None


def _refuse_swarm_leader(spec: CloudSpec, droplet: Any | None) -> None:
    """One droplet (NODES=1) asked of a droplet that leads a swarm (it carries the cluster tag
    since a NODES > 1 deploy): Compose beside the swarm's stack would fight it for 80/443."""
    tag = cluster_tag(spec.droplet_name)
    if droplet is None or spec.nodes != 1 or tag not in (getattr(droplet, "tags", None) or []):
        return
    raise CloudError(f"droplet {droplet.name} is node 1 of a Docker Swarm (it carries the tag {tag}), "
                     "and NODES is 1", f"set NODES (or --nodes) to the swarm's node count: its droplets carry "
                     f"the tag {tag}. Back to one droplet is not automated: shrink to 2 nodes, then on "
                     f"{droplet.name} `docker stack rm <project>` and `docker swarm leave --force`, delete "
                     f"{droplet.name}-2, remove the tag {tag} from {droplet.name}, and deploy with NODES=1 "
                     "(the data volumes are kept)")


# --- ssh key and droplet ---------------------------------------------------------------
def ssh_fingerprint(public_key: str) -> str:
    """DigitalOcean's key fingerprint (MD5 of the key blob, colon hex)."""
    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, ValueError):
        raise CloudError("the SSH public key is not an OpenSSH public key line",
                         "point SSH_KEY_PATH at a key pair whose .pub file reads "
                         "'ssh-ed25519 AAAA... comment'") from None
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 - DO's identifier, not security
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def _lookup_ssh_key(spec: CloudSpec, on_event: OnEvent) -> Any | None:
    """The account's key with our public key's fingerprint (a GET), or None."""
    def load() -> Any:
        key = digitalocean.SSHKey(token=spec.token, fingerprint=ssh_fingerprint(spec.ssh_public_key))
        key.load()
        return key
    return _call(spec, "looking up the SSH key", load, on_event, missing_ok=True)


def _find_ssh_key(spec: CloudSpec, on_event: OnEvent) -> int | None:
    found = _lookup_ssh_key(spec, on_event)
    return int(found.id) if found is not None else None


def _ensure_ssh_key(spec: CloudSpec, on_event: OnEvent) -> tuple[int, bool]:
    fingerprint = ssh_fingerprint(spec.ssh_public_key)

    def lookup() -> Any | None:
        return _lookup_ssh_key(spec, on_event)

    found = lookup()
    if found is not None:
        return int(found.id), False
    new = digitalocean.SSHKey(token=spec.token, name=spec.ssh_key_name,
                              public_key=spec.ssh_public_key.strip())

    def create() -> Any:
        new.create()
        return new
    try:
        # After a lost answer the key may be registered already: look before posting again.
        made = _call(spec, "registering the SSH key", create, on_event, before_retry=lookup)
    except CloudError:
        made = lookup()  # refused as "already in use": a concurrent run registered it first
        if made is None:
            raise
        return int(made.id), False
    on_event("info", f"registered SSH key {spec.ssh_key_name!r} ({fingerprint})")
    return int(made.id), True


def _create_droplet(spec: CloudSpec, key_id: int, user_data: str, on_event: OnEvent,
                    extra_tags: tuple[str, ...] = (), vpc_uuid: str | None = None) -> Any:
    """``vpc_uuid`` None: the region's default VPC (the field is left out)."""
    # The body is ours, not Droplet.create()'s: the library always sends "vpc_uuid": null,
    # which DigitalOcean's contract does not allow (a string, or the field left out).
    body = {"name": spec.droplet_name, "region": spec.region, "size": spec.size,
            "image": spec.image, "ssh_keys": [key_id], "tags": [*spec.tags, *extra_tags],
            "user_data": user_data, "ipv6": False, "monitoring": True}
    if vpc_uuid:
        body["vpc_uuid"] = vpc_uuid
    api = digitalocean.Droplet(token=spec.token)

    def create() -> Any:
        answer = api.get_data("droplets/", type="POST", params=body)
        return digitalocean.Droplet(token=spec.token, **answer["droplet"])
    # A POST that failed with 5xx/timeout may still have created the droplet: look first.
    made = _call(spec, "creating the droplet", create, on_event,
                 before_retry=lambda: _find(spec, on_event))
    on_event("info", f"created droplet {spec.droplet_name} (id {made.id}) in {spec.region}")
    return made


def _settle_creation(spec: CloudSpec, made: Any, on_event: OnEvent) -> None:
    """Two deploys that found no droplet both create one (DigitalOcean has no create-if-absent).
    Right after creating, each lists the droplets of that name: the oldest (lowest id, as
    DigitalOcean numbers them in creation order) stays; a run that created a newer one deletes
    it and fails before touching the firewall or DNS, naming the run that came first."""
    older = [d for d in _named(spec, on_event) if int(d.id) < int(made.id)]
    if not older:
        return  # ours is the oldest: a newer one's run removes it
    first = older[0]
    holder = next((p for p in map(parse_presence, first.tags or []) if p), None)
    by = f", by {holder.who} from {holder.address}" if holder else ""
    what = (f"another deploy created droplet {spec.droplet_name} first (id {first.id}, created "
            f"{getattr(first, 'created_at', '?')}{by})")
    try:
        _call(spec, "deleting the duplicate droplet", made.destroy, on_event, missing_ok=True)
    except CloudError as exc:
        raise CloudError(f"{what}; the duplicate this run created (id {made.id}) could not be deleted: "
                         f"{exc.message}", f"delete droplet {made.id} in the control panel, then run "
                         "`inv deploy` again") from None
    on_event("warning", f"deleted droplet {made.id}: {what}")
    raise ConcurrentDeploy(f"{what}; this run deleted the droplet it had just created (id {made.id}) and "
                           "did not touch the firewall or DNS",
                           "wait for that deploy to finish, then run `inv deploy` again: it finds that droplet")


def _wait_active(spec: CloudSpec, droplet: Any, on_event: OnEvent) -> Any:
    deadline = time.monotonic() + spec.active_timeout
    interval = 0.5
    while droplet.status != "active":
        if droplet.status in ("off", "archive"):
            raise CloudError(f"droplet {spec.droplet_name} (id {droplet.id}) is {droplet.status!r}",
                             "power it on in the DigitalOcean control panel, or delete it so a "
                             "new one is created")
        if time.monotonic() >= deadline:
            raise CloudError(
                f"droplet {spec.droplet_name} (id {droplet.id}) is still {droplet.status!r} "
                f"after {spec.active_timeout:g} s",
                "check it in the DigitalOcean control panel; raise DO_ACTIVE_TIMEOUT if the "
                "region is slow, or delete the droplet and run again")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 5.0)
        _call(spec, "waiting for the droplet", droplet.load, on_event)
    return droplet


def ssh_banner(host: str, port: int, timeout: float) -> str | None:
    """The SSH server's identification line, or None when nothing SSH-like answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            while b"\n" not in data and len(data) < 512:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].strip().decode("ascii", "replace")
    return line if line.startswith("SSH-") else None


def wait_for_ssh(host: str, port: int, timeout: float) -> bool:
    """Poll with backoff until sshd sends its banner; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    interval = 0.25
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if ssh_banner(host, port, min(5.0, remaining)):
            return True
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 5.0)


# --- firewall ----------------------------------------------------------------------------
def discover_operator_ip(url: str, timeout: float) -> str:
    """The operator's public IP as seen by `url` (plain-text answer)."""
    try:
        resp = requests.get(url, timeout=timeout)
        resp.raise_for_status()
        return str(ipaddress.ip_address(resp.text.strip()))
    except (requests.RequestException, ValueError) as exc:
        reason = type(exc).__name__ if not isinstance(exc, ValueError) else "answer is not an IP"
        raise CloudError(f"could not discover your public IP from {url} ({reason})",
                         "check your network, set OPERATOR_IP_URL to a service answering with "
                         "your IP, or use --skip-allowlist and manage the firewall yourself"
                         ) from None


def _as_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{32 if ip.version == 4 else 128}"


def firewall_rules(operator_ips: list[str], extra_cidrs: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """(inbound, outbound): web open to all, SSH only from the operators + extra CIDRs."""
    ssh_sources = [_as_cidr(ip) for ip in operator_ips]
    for cidr in extra_cidrs:
        try:
            net = str(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise CloudError(f"extra SSH CIDR {cidr!r} is not an IP network",
                             "fix allowlist.extra_ssh_cidrs, e.g. 203.0.113.0/24") from None
        if net not in ssh_sources:
            ssh_sources.append(net)
    inbound = [{"protocol": "tcp", "ports": "22", "sources": {"addresses": ssh_sources}},
               {"protocol": "tcp", "ports": "80", "sources": {"addresses": list(WEB_SOURCES)}},
               {"protocol": "tcp", "ports": "443", "sources": {"addresses": list(WEB_SOURCES)}}]
    # DigitalOcean drops all egress a firewall does not allow: the droplet must still pull
    # packages and images and resolve names.
    outbound = [{"protocol": p, "ports": "all", "destinations": {"addresses": list(ANYWHERE)}}
                for p in ("tcp", "udp", "icmp")]
    return inbound, outbound


# Docker Swarm's ports: cluster management (manager), node gossip, overlay network traffic (VXLAN).
SWARM_PORTS = (("tcp", "2377"), ("tcp", "7946"), ("udp", "7946"), ("udp", "4789"))


def swarm_rules(cluster: str) -> list[dict]:
    """Inbound rules opening the Swarm ports to the droplets carrying the tag ``cluster`` and to
    nothing else: the source is the tag, never an address (so never 0.0.0.0/0), and it follows
    the nodes as they are added or removed. A Cloud Firewall filters the VPC's traffic too, so
    without these rules nodes could not reach each other's Swarm ports even privately. (An
    encrypted overlay would need ESP, which a Cloud Firewall cannot admit: don't use one.)"""
    return [{"protocol": protocol, "ports": ports, "sources": {"tags": [cluster]}}
            for protocol, ports in SWARM_PORTS]


# Every kind of source/destination DigitalOcean documents for a firewall rule.
_TARGET_KINDS = ("addresses", "droplet_ids", "load_balancer_uids", "kubernetes_ids", "tags")


def _rule_key(rules: list[dict], side: str) -> frozenset:
    def ports(rule: dict) -> str:
        value = str(rule.get("ports") or "all")
        return "all" if rule.get("protocol") == "icmp" or value in ("0", "all", "1-65535") else value
    return frozenset((r.get("protocol"), ports(r),
                      *(frozenset((r.get(side) or {}).get(kind) or []) for kind in _TARGET_KINDS))
                     for r in rules)


@dataclass(frozen=True)
class _FirewallState:
    """Our firewall as the API lists it, compared with the rules this run wants (reads only)."""

    operator_ip: str
    inbound: list[dict]
    outbound: list[dict]
    current: dict | None        # the firewall named after the droplet, None when there is none
    same_rules: bool
    attached: bool

    @property
    def action(self) -> str:
        """What provision does about it: create | update | attach | unchanged."""
        if self.current is None:
            return "create"
        if not self.same_rules:
            return "update"
        return "unchanged" if self.attached else "attach"


def _compare(operator_ip: str, inbound: list[dict], outbound: list[dict], current: dict | None,
             droplet_id: int | None, tag: str | None = None) -> _FirewallState:
    """``tag``: the firewall is to be attached by that tag (a cluster), else to ``droplet_id``."""
    if current is None:
        return _FirewallState(operator_ip, inbound, outbound, None, False, False)
    same_rules = (_rule_key(current.get("inbound_rules") or [], "sources") == _rule_key(inbound, "sources")
                  and _rule_key(current.get("outbound_rules") or [], "destinations")
                  == _rule_key(outbound, "destinations"))
    if tag is not None:
        attached = tag in (current.get("tags") or [])
    else:
        attached = droplet_id is not None and droplet_id in (current.get("droplet_ids") or [])
    return _FirewallState(operator_ip, inbound, outbound, current, same_rules, attached)


def _named_firewalls(spec: CloudSpec, on_event: OnEvent) -> list[dict]:
    """Firewalls named after the droplet, oldest first."""
    listed = _call(spec, "listing firewalls", lambda: _manager(spec).get_data("firewalls")["firewalls"], on_event)
    return sorted((fw for fw in listed if fw.get("name") == spec.droplet_name),
                  key=lambda fw: (fw.get("created_at") or "", fw.get("id") or ""))


def _firewall_state(spec: CloudSpec, droplet_id: int | None, on_event: OnEvent) -> _FirewallState:
    """For the plan: this operator's rules against the firewall as it is. ``droplet_id`` None:
    the droplet does not exist yet (so nothing is attached to it)."""
    operator_ip = discover_operator_ip(spec.operator_ip_url, spec.operator_ip_timeout)
    inbound, outbound = firewall_rules([operator_ip], spec.extra_ssh_cidrs)
    mine = _named_firewalls(spec, on_event)
    return _compare(operator_ip, inbound, outbound, mine[0] if mine else None, droplet_id)


def _ensure_firewall(spec: CloudSpec, droplet_id: int, operator_ip: str, allowed: list[str],
                     on_event: OnEvent, cluster: str | None = None) -> FirewallResult:
    """The firewall named after the droplet, with SSH from the ``allowed`` operators only.
    ``cluster``: the cluster tag; the Swarm ports open between the droplets carrying it, and
    the firewall is attached by it (every node, and a node added later from its creation)."""
    inbound, outbound = firewall_rules(allowed, spec.extra_ssh_cidrs)
    if cluster is not None:
        inbound += swarm_rules(cluster)
    who = ", ".join(allowed)

    def named() -> list[dict]:
        return _named_firewalls(spec, on_event)
    mine = named()
    for extra in mine[1:]:  # a duplicate keeps its own SSH rule (old addresses): keep the oldest only
        _call(spec, "deleting a duplicate firewall",
              digitalocean.Firewall(token=spec.token, id=extra["id"]).destroy, on_event, missing_ok=True)
        on_event("warning", f"deleted duplicate firewall {extra['id']} named {spec.droplet_name}")
    state = _compare(operator_ip, inbound, outbound, mine[0] if mine else None, droplet_id, cluster)
    current = state.current
    if current is None:
        fw = digitalocean.Firewall(
            token=spec.token, name=spec.droplet_name, droplet_ids=[] if cluster else [droplet_id],
            tags=[cluster] if cluster else [],
            inbound_rules=[digitalocean.InboundRule(r["protocol"], r["ports"],
                                                    digitalocean.Sources(**r["sources"]))
                           for r in inbound],
            outbound_rules=[digitalocean.OutboundRule(r["protocol"], r["ports"],
                                                      digitalocean.Destinations(**r["destinations"]))
                            for r in outbound])
        # After a lost answer the firewall may exist: a second one would keep its own SSH rule.
        _call(spec, "creating the firewall", fw.create, on_event,
              before_retry=lambda: named() or None)
        on_event("info", f"created firewall {spec.droplet_name}: SSH only from {who}"
                         + (f", Swarm ports between the droplets tagged {cluster}" if cluster else ""))
        return FirewallResult("created", operator_ip, inbound)
    if state.action == "unchanged":
        return FirewallResult("unchanged", operator_ip, inbound)
    api = digitalocean.Firewall(token=spec.token, id=current["id"])
    if state.action == "update":
        ids, tags = list(current.get("droplet_ids") or []), list(current.get("tags") or [])
        body = {"name": spec.droplet_name, "inbound_rules": inbound, "outbound_rules": outbound,
                "droplet_ids": sorted(set(ids) if cluster else set(ids) | {droplet_id}),
                "tags": tags + [cluster] if cluster and cluster not in tags else tags}
        _call(spec, "updating the firewall",
              lambda: api.get_data(f"firewalls/{current['id']}", type="PUT", params=body), on_event)
        on_event("info", f"updated firewall {spec.droplet_name}: SSH only from {who}"
                         + (f", Swarm ports between the droplets tagged {cluster}" if cluster else ""))
    elif cluster:
        _call(spec, "attaching the firewall", lambda: api.add_tags([cluster]), on_event)
        on_event("info", f"attached firewall {spec.droplet_name} to the droplets tagged {cluster}")
    else:
        _call(spec, "attaching the firewall", lambda: api.add_droplets([droplet_id]), on_event)
        on_event("info", f"attached firewall {spec.droplet_name} to droplet {droplet_id}")
    return FirewallResult("updated", operator_ip, inbound)


# --- operators on the SSH allowlist -------------------------------------------------------
# Each operator who provisions is announced on the droplet with a tag naming their address;
# the firewall allows SSH from every operator announced within ALLOWLIST_TTL (the newest
# address of each), so two deploys at once never lock each other out.
PRESENCE_PREFIX = "stackdeploy-ssh:"
ALLOWLIST_ROUNDS = 3  # writes of the firewall while operators keep arriving


@dataclass(frozen=True)
class Presence:
    address: str
    since: int          # unix seconds, by the announcing machine's clock
    who: str            # user@host in the tag alphabet
    tag: str


def now_s() -> int:
    return int(time.time())


def _tag_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "_", text)[:80] or "unknown"


def presence_tag(address: str, since: int, who: str) -> str:
    """stackdeploy-ssh:<address>:<unix seconds>:<who>, in DigitalOcean's tag alphabet (letters,
    digits, '-', '_', ':'): an IPv4 address's dots become '-', an IPv6 address's colons '_'."""
    encoded = str(ipaddress.ip_address(address)).replace(".", "-").replace(":", "_")
    return f"{PRESENCE_PREFIX}{encoded}:{int(since)}:{_tag_safe(who)}"


def parse_presence(tag: str) -> Presence | None:
    if not tag.startswith(PRESENCE_PREFIX):
        return None
    encoded, _, rest = tag[len(PRESENCE_PREFIX):].partition(":")
    since, _, who = rest.partition(":")
    address = encoded.replace("_", ":") if "_" in encoded else encoded.replace("-", ".")
    try:
        return Presence(str(ipaddress.ip_address(address)), int(since), who, tag)
    except ValueError:
        return None


def _operators(spec: CloudSpec, droplet: Any, on_event: OnEvent) -> tuple[list[Presence], list[Presence]]:
    """(live, retired) operators announced on the droplet, read afresh: live is the newest
    announcement of each operator within ALLOWLIST_TTL; the others are retired."""
    _call(spec, "reading the droplet's tags", droplet.load, on_event)
    announced = sorted(filter(None, map(parse_presence, droplet.tags or [])), key=lambda p: -p.since)
    live: dict[str, Presence] = {}
    retired: list[Presence] = []
    for p in announced:
        if p.who in live or now_s() - p.since > spec.allowlist_ttl:
            retired.append(p)
        else:
            live[p.who] = p
    return list(live.values()), retired


def _announce(spec: CloudSpec, droplet: Any, operator_ip: str, on_event: OnEvent) -> list[str]:
    """Announce this operator on the droplet (no write while a recent announcement stands),
    remove retired announcements, and return every live operator's address."""
    live, retired = _operators(spec, droplet, on_event)
    me = _tag_safe(spec.operator)
    mine = next((p for p in live if p.who == me), None)
    if mine is None or mine.address != operator_ip or now_s() - mine.since > spec.allowlist_ttl / 2:
        tag = digitalocean.Tag(token=spec.token, name=presence_tag(operator_ip, now_s(), spec.operator))
        _call(spec, "announcing this operator on the droplet", tag.create, on_event)   # same name: same tag
        _call(spec, "announcing this operator on the droplet",
              lambda: tag.add_droplets([int(droplet.id)]), on_event)
        retired += [mine] if mine else []
        live = [p for p in live if p.who != me] + [Presence(operator_ip, now_s(), me, tag.name)]
    for old in retired:
        _call(spec, "removing an old operator announcement",
              digitalocean.Tag(token=spec.token, name=old.tag).delete, on_event, missing_ok=True)
    return sorted({p.address for p in live})


def _ensure_allowlist(spec: CloudSpec, droplet: Any, operator_ip: str, on_event: OnEvent,
                      cluster: str | None = None) -> FirewallResult:
    """Write the firewall from the operators announced, then read them again: one who was
    announced meanwhile (a concurrent deploy) gets the firewall written again with them in.
    ``droplet`` holds the announcements (a cluster's first node); ``cluster``: see _ensure_firewall."""
    allowed = _announce(spec, droplet, operator_ip, on_event)
    status = "unchanged"
    for _ in range(ALLOWLIST_ROUNDS):
        result = _ensure_firewall(spec, int(droplet.id), operator_ip, allowed, on_event, cluster)
        status = result.status if status == "unchanged" else status
        now = sorted({p.address for p in _operators(spec, droplet, on_event)[0]})
        if now == allowed:
            return dataclasses.replace(result, status=status)
        on_event("info", f"operators changed while the firewall was written ({', '.join(now)}): writing it again")
        allowed = now
    on_event("warning", "operators kept arriving while the firewall was written; run `inv provision` again "
                        "to be sure every deploying operator is allowed")
    return dataclasses.replace(result, status=status)


# --- DNS ---------------------------------------------------------------------------------
def dns_hosts(domain: str, subdomains: tuple[str, ...]) -> list[str]:
    host = domain.strip().lower().rstrip(".")
    out = [host]
    for sub in subdomains:
        label = sub.strip().lower()
        if not _LABEL.match(label):
            raise CloudError(f"subdomain {sub!r} is not a valid DNS label",
                             "set SUBDOMAINS to labels like flower,admin (letters, digits, '-')")
        out.append(f"{label}.{host}")
    return out


def managed_zone(host: str, zones: list[str]) -> str | None:
    """The longest managed zone that `host` lies in (host itself or a parent)."""
    candidates = [z.lower().rstrip(".") for z in zones]
    inside = [z for z in candidates if host == z or host.endswith("." + z)]
    return max(inside, key=len) if inside else None


def _read_dns(spec: CloudSpec, hosts: list[str], on_event: OnEvent) -> tuple[str | None, Any, list]:
    """(zone, its Domain, its records) for the longest managed zone holding the hosts; (None,
    None, []) when the domain is not managed in this account. Reads only."""
    zones = [d.name for d in _call(spec, "listing DNS domains", _manager(spec).get_all_domains, on_event)]
    zone = managed_zone(hosts[0], zones)
    if zone is None:
        return None, None, []
    domain = digitalocean.Domain(token=spec.token, name=zone)
    return zone, domain, _call(spec, f"listing DNS records of {zone}", domain.get_records, on_event)


def _dns_work(hosts: list[str], zone: str, records: list, ip: str | None) -> list[tuple[str, str, Any]]:
    """(host, name in the zone, the A record to repoint or None to create one) for every host not
    pointing at ``ip`` (None: a droplet still to be made, which no record points at)."""
    work = []
    for host in hosts:
        rel = "@" if host == zone else host[: -(len(zone) + 1)]
        a_records = [r for r in records if r.type == "A" and r.name == rel]
        if not a_records:
            work.append((host, rel, None))
        work += [(host, rel, rec) for rec in a_records if rec.data != ip]
    return work


def _unmanaged(hosts: list[str], ip: str) -> str:
    return (f"DNS for {hosts[0]} is not managed in this DigitalOcean account; point A "
            f"records for {', '.join(hosts)} at {ip} at your DNS provider")


def _ensure_dns(spec: CloudSpec, ip: str, on_event: OnEvent) -> DnsResult:
    hosts = dns_hosts(spec.domain or "", spec.subdomains)
    zone, domain, records = _read_dns(spec, hosts, on_event)
    if zone is None:
        warning = _unmanaged(hosts, ip)
        on_event("warning", warning)
        return DnsResult("unmanaged", [], warning)
    changed: list[dict] = []
    for host, rel, rec in _dns_work(hosts, zone, records, ip):
        if rec is None:
            def created(rel: str = rel) -> Any | None:  # after a lost answer: is it there already?
                current = _call(spec, f"listing DNS records of {zone}", domain.get_records, on_event)
                return next((r for r in current if (r.type, r.name, r.data) == ("A", rel, ip)), None)
            _call(spec, f"creating the A record {host}",
                  lambda rel=rel: domain.create_new_domain_record(type="A", name=rel, data=ip,
                                                                  ttl=DNS_TTL), on_event,
                  before_retry=created)
            changed.append({"name": host, "action": "created", "from": None, "to": ip})
        else:
            old, rec.data = rec.data, ip
            _call(spec, f"updating the A record {host}", rec.save, on_event)
            changed.append({"name": host, "action": "updated", "from": old, "to": ip})
    for change in changed:
        on_event("info", f"DNS {change['name']} A -> {ip} ({change['action']})")
    return DnsResult("managed", changed, None)


# --- the whole step ---------------------------------------------------------------------
def _checked_input(spec: CloudSpec, planning: bool = False) -> str:
    """The droplet's user data; bad input (key, user, subdomains) fails before any API call.
    A plan (no host key: nothing is created) checks the same inputs with a throwaway key."""
    if spec.host_key is None and not planning:
        raise CloudError("no SSH host key was generated for the new droplet",
                         "provision through deploy.steps.provision, which generates and pins one")
    try:
        # A plan creates nothing: a throwaway key (never kept, never sent) checks the rest.
        key = spec.host_key or hostkey.generate(SecretRegistry())
        user_data = build_user_data(spec.deploy_user, spec.ssh_public_key, key, spec.base_dir)
    except CloudInitError as exc:
        raise CloudError(str(exc), "fix DEPLOY_USER / SSH_KEY_PATH (its .pub file) / REMOTE_BASE_DIR") from None
    if spec.domain:
        dns_hosts(spec.domain, spec.subdomains)
    return user_data


def _begin(spec: CloudSpec, on_event: OnEvent, account: AccountInfo | None) -> tuple[str, str | None]:
    """(user data, operator IP or None without a firewall): the input checked before any API
    call, then the token (unless ``account`` says it was checked this run), then the operator's
    address, known before anything is created: a new droplet carries its creator's announcement."""
    user_data = _checked_input(spec)
    if account is None:
        account = check_token(spec, on_event)
        on_event("info", f"DigitalOcean token accepted ({account.email})")
    operator_ip = (discover_operator_ip(spec.operator_ip_url, spec.operator_ip_timeout)
                   if spec.firewall_enabled else None)
    return user_data, operator_ip


def provision(spec: CloudSpec, on_event: OnEvent = _log_event,
              account: AccountInfo | None = None,
              on_droplet: Callable[[DropletInfo], None] | None = None) -> ProvisionResult:
    """Find or create the droplet, lock SSH to the operator, point DNS at it. ``account``: the
    token was already checked this run (the check is not repeated). ``on_droplet`` hears of the
    droplet as soon as it is found or created, and again once it is active (with its address),
    so a provision that fails or is interrupted later still names it."""
    def report(info: DropletInfo) -> DropletInfo:
        if on_droplet is not None:
            on_droplet(info)
        return info

    user_data, operator_ip = _begin(spec, on_event, account)
    warnings: list[str] = []
    with _library_env(spec):
        droplet = _find(spec, on_event)
        _refuse_swarm_leader(spec, droplet)
        created = key_registered = False
        if droplet is None:
            key_id, key_registered = _ensure_ssh_key(spec, on_event)
            announce = (presence_tag(operator_ip, now_s(), spec.operator),) if operator_ip else ()
            droplet = _create_droplet(spec, key_id, user_data, on_event, announce)
            created = True
            _settle_creation(spec, droplet, on_event)  # a concurrent deploy's older droplet wins
        else:
            on_event("info", f"found droplet {droplet.name} (id {droplet.id}, {droplet.status})")
        report(_info(droplet, created))
        if operator_ip:  # before the droplet is reachable, so SSH is never open to all
            firewall = _ensure_allowlist(spec, droplet, operator_ip, on_event)
        else:
            firewall = FirewallResult("skipped", None, [])
            on_event("info", "allowlist skipped: the Cloud Firewall was not touched")
        droplet = _wait_active(spec, droplet, on_event)
        info = report(_info(droplet, created))
        if info.public_ipv4 is None:
            warnings.append(f"droplet {info.name} has no public IPv4 address yet; remote steps "
                            "need one (check the droplet's networking in the control panel)")
            on_event("warning", warnings[-1])
        ssh_ready = False
        if info.public_ipv4 and spec.ssh_wait_timeout > 0:
            ssh_ready = wait_for_ssh(info.public_ipv4, spec.ssh_port, spec.ssh_wait_timeout)
            if not ssh_ready:
                warnings.append(f"SSH on {info.public_ipv4}:{spec.ssh_port} did not answer within "
                                f"{spec.ssh_wait_timeout:g} s; check the firewall allowlist "
                                "(your IP) or raise DO_SSH_WAIT_TIMEOUT")
                on_event("warning", warnings[-1])
        if not spec.domain:
            dns = DnsResult("skipped", [], "no DOMAIN configured: DNS records were not managed")
        elif info.public_ipv4 is None:
            dns = DnsResult("skipped", [], "DNS not updated: the droplet has no public IPv4")
        else:
            dns = _ensure_dns(spec, info.public_ipv4, on_event)
    if dns.warning and dns.warning not in warnings:
        warnings.append(dns.warning)
    changed = (created or key_registered or firewall.status in ("created", "updated")
               or bool(dns.records_changed))
    return ProvisionResult(droplet=info, firewall=firewall, dns=dns, warnings=warnings,
                           changed=changed, ssh_ready=ssh_ready, ssh_key_registered=key_registered)


# --- a cluster: N droplets, one tag, one VPC, one firewall ---------------------------------
CLUSTER_SUFFIX = "-swarm"


def cluster_tag(droplet_name: str) -> str:
    """The tag every node of the cluster named ``droplet_name`` carries: the name in
    DigitalOcean's tag alphabet (letters, digits, '-', '_', ':'; at most 255) plus "-swarm"."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", droplet_name)[:255 - len(CLUSTER_SUFFIX)] + CLUSTER_SUFFIX


def node_names(droplet_name: str, count: int) -> list[str]:
    """Node 1 keeps ``droplet_name`` (growing from one droplet keeps the live one), then
    ``<droplet_name>-2``, ``-3``, ..."""
    return [droplet_name] + [f"{droplet_name}-{k}" for k in range(2, count + 1)]


@dataclass(frozen=True)
class ClusterResult:
    """What provision_cluster() made or found. ``surplus``: nodes numbered beyond spec.nodes
    (a smaller count than the cluster has), left exactly as they are, still running, tagged and
    behind the firewall: a later step drains them out of the Swarm and deletes them."""

    nodes: tuple[DropletInfo, ...]      # node 1 (named droplet_name) first, then -2, -3, ...
    surplus: tuple[DropletInfo, ...]
    tag: str                            # the cluster tag ("" for one droplet: no cluster)
    vpc_uuid: str | None                # the VPC every node is in (None: not known, one droplet)
    firewall: FirewallResult
    dns: DnsResult                      # the records point at node 1
    warnings: list[str]
    changed: bool
    ssh_ready: bool = False             # every node's sshd answered
    ssh_key_registered: bool = False

    @property
    def droplet(self) -> DropletInfo:
        """Node 1: the droplet DNS points at (the one droplet when there is no cluster)."""
        return self.nodes[0]


HostKeyFor = Callable[[str], HostKey]


def _node_spec(spec: CloudSpec, name: str, tag: str) -> CloudSpec:
    """Node 2..N: looked up, created and settled as a droplet of its own whose first tag is the
    cluster tag, so a droplet of that name without the tag (another deployment's) is never adopted."""
    return dataclasses.replace(spec, droplet_name=name, tags=(tag, *(t for t in spec.tags if t != tag)))


def _members(spec: CloudSpec, tag: str, on_event: OnEvent) -> dict[int, Any]:
    """Nodes 2.. of the cluster as listed by its tag, by number (node 1 is found by its name)."""
    listed = _call(spec, "listing the cluster's droplets",
                   lambda: _manager(spec).get_all_droplets(tag_name=tag), on_event)
    numbered = re.compile(rf"^{re.escape(spec.droplet_name)}-([1-9][0-9]*)$")
    by_number: dict[int, list[Any]] = {}
    for droplet in listed:
        match = numbered.match(droplet.name)
        if match and int(match.group(1)) >= 2:
            by_number.setdefault(int(match.group(1)), []).append(droplet)
    return {k: _one_named(f"{spec.droplet_name}-{k}", sorted(ds, key=lambda d: int(d.id)))
            for k, ds in sorted(by_number.items())}


def find_cluster(spec: CloudSpec) -> list[DropletInfo]:
    """Read-only: every node of the cluster that exists, node 1 first, then by number (also
    those beyond spec.nodes: the caller sees a changed count); empty without node 1."""
    with _library_env(spec):
        first = _find(spec, _log_event)
        if first is None:
            return []
        members = _members(spec, cluster_tag(spec.droplet_name), _log_event)
    nodes = [first] + [d for k, d in sorted(members.items()) if d is not None]
    return [_info(d, created=False) for d in nodes]


@dataclass(frozen=True)
class ClusterPlan:
    """What provision_cluster() would do with the droplets: ``nodes`` 1..N, each the droplet
    found or None (to be created); ``surplus``: nodes beyond N, to be drained and deleted."""

    tag: str
    nodes: tuple[tuple[str, DropletInfo | None], ...]
    surplus: tuple[DropletInfo, ...]

    @property
    def changes(self) -> bool:
        return bool(self.surplus) or any(d is None for _, d in self.nodes)


def plan_cluster(spec: CloudSpec, on_event: OnEvent = _log_event) -> ClusterPlan:
    """The cluster's nodes as provision_cluster() would find them, with GET requests only."""
    tag = cluster_tag(spec.droplet_name)
    with _library_env(spec):
        first = _find(spec, on_event)
        members = _members(spec, tag, on_event)
    found = {k: d for k, d in members.items() if d is not None} | ({1: first} if first is not None else {})
    nodes = tuple((name, _info(found[k], created=False) if k in found else None)
                  for k, name in enumerate(node_names(spec.droplet_name, spec.nodes), 1))
    surplus = tuple(_info(d, created=False) for k, d in sorted(found.items()) if k > spec.nodes)
    return ClusterPlan(tag=tag, nodes=nodes, surplus=surplus)


def delete_surplus(spec: CloudSpec, surplus: Sequence[DropletInfo], on_event: OnEvent = _log_event) -> list[str]:
    """Delete the nodes a smaller cluster no longer has, once they are out of the Swarm. Only a
    droplet listed under the cluster tag, numbered beyond spec.nodes, with the id given, is
    deleted: never node 1, never a droplet that merely shares a name. Returns the names deleted."""
    tag = cluster_tag(spec.droplet_name)
    wanted = {d.id for d in surplus}
    deleted: list[str] = []
    with _library_env(spec):
        members = _members(spec, tag, on_event)
        for k, droplet in sorted(members.items()):
            if droplet is None or k <= spec.nodes or int(droplet.id) not in wanted:
                continue
            _call(spec, f"deleting droplet {droplet.name} (id {droplet.id})", droplet.destroy, on_event,
                  missing_ok=True)
            deleted.append(droplet.name)
            on_event("info", f"deleted droplet {droplet.name} (id {droplet.id}): it left the swarm")
    return deleted


def _same_vpc(spec: CloudSpec, found: dict[int, Any]) -> str | None:
    """The VPC of the nodes that exist (node 1's, else the lowest node's); CloudError, before
    anything is written, when they are not all in it: Swarm nodes talk over one VPC."""
    if not found:
        return None
    first = min(found)
    vpc = getattr(found[first], "vpc_uuid", None) or None
    strays = [d for d in found.values() if (getattr(d, "vpc_uuid", None) or None) != vpc]
    if strays:
        stray = strays[0]
        raise CloudError(f"droplet {stray.name} (id {stray.id}) is in VPC {stray.vpc_uuid}, not in "
                         f"{found[first].name}'s VPC {vpc}: the cluster's nodes talk over one VPC",
                         f"remove the tag {cluster_tag(spec.droplet_name)!r} from {stray.name} and delete "
                         "it once its work is moved; the next deploy creates it again in the right VPC")
    return vpc


def _join_tag(spec: CloudSpec, droplet: Any, tag: str, on_event: OnEvent) -> bool:
    """Tag a node that lacks the cluster tag (node 1 of a single-droplet deploy); True if tagged."""
    if tag in (droplet.tags or []):
        return False
    api = digitalocean.Tag(token=spec.token, name=tag)
    _call(spec, "creating the cluster tag", api.create, on_event)   # same name: same tag
    _call(spec, f"tagging droplet {droplet.name} as a cluster node",
          lambda: api.add_droplets([int(droplet.id)]), on_event)
    droplet.tags = [*(droplet.tags or []), tag]
    on_event("info", f"droplet {droplet.name} joined the cluster tag {tag}")
    return True


def provision_cluster(spec: CloudSpec, on_event: OnEvent = _log_event,
                      account: AccountInfo | None = None,
                      on_droplet: Callable[[DropletInfo], None] | None = None,
                      host_key_for: HostKeyFor | None = None) -> ClusterResult:
    """``spec.nodes`` droplets in one VPC, each carrying the cluster tag (cluster_tag()) beside
    spec.tags, behind one firewall attached by that tag: SSH from the operators, 80/443 from
    anywhere, the Swarm ports (swarm_rules()) only between the nodes. DNS points at node 1.

    spec.nodes == 1 is provision() exactly (same droplet, same requests, no tag, no Swarm rules).
    Node 1 is spec.droplet_name, so growing from one droplet keeps it (it is tagged, and the
    firewall gains the Swarm rules and the tag); nodes 2..N are created in node 1's VPC.
    Shrinking deletes nothing here: nodes beyond spec.nodes come back as ``surplus`` for a
    later step to drain and delete. Node 1 carries the operators' announcements (the SSH
    allowlist); concurrency, retries and the token check behave as in provision().

    ``host_key_for(name)``: the SSH host key for node ``name`` (2..N) about to be created
    (node 1's is spec.host_key); a node of its own key each, kept and pinned by the caller.
    ``on_droplet`` hears of every node as in provision()."""
    if spec.nodes < 1:
        raise CloudError(f"a cluster of {spec.nodes} droplets makes no sense", "set the node count to 1 or more")
    if spec.nodes == 1:
        one = provision(spec, on_event, account, on_droplet)
        return ClusterResult(nodes=(one.droplet,), surplus=(), tag="", vpc_uuid=None, firewall=one.firewall,
                             dns=one.dns, warnings=one.warnings, changed=one.changed,
                             ssh_ready=one.ssh_ready, ssh_key_registered=one.ssh_key_registered)
    if host_key_for is None:
        raise CloudError("no SSH host keys were generated for the cluster's nodes",
                         "provision through deploy.steps, which generates and pins one per node")

    def report(info: DropletInfo) -> DropletInfo:
        if on_droplet is not None:
            on_droplet(info)
        return info

    user_data, operator_ip = _begin(spec, on_event, account)
    tag = cluster_tag(spec.droplet_name)
    warnings: list[str] = []
    names = node_names(spec.droplet_name, spec.nodes)
    specs = [spec] + [_node_spec(spec, name, tag) for name in names[1:]]
    with _library_env(spec):
        first = _find(spec, on_event)
        members = _members(spec, tag, on_event)
        surplus = [members[k] for k in sorted(members) if k > spec.nodes]
        found = {k: d for k, d in members.items() if k <= spec.nodes} | ({1: first} if first else {})
        for k, node in enumerate(specs[1:], 2):  # before anything is made: is the name somebody else's?
            if k not in found and (droplet := _find(node, on_event)) is not None:
                found[k] = droplet               # ours, created meanwhile
        vpc = _same_vpc(spec, found)
        key_id, key_registered = None, False
        droplets: list[Any] = []
        created: set[int] = set()
        announce = (presence_tag(operator_ip, now_s(), spec.operator),) if operator_ip else ()
        for k, node in enumerate(specs, 1):
            droplet = found.get(k)
            if droplet is None:
                if key_id is None:
                    key_id, key_registered = _ensure_ssh_key(spec, on_event)
                data = user_data if k == 1 else _checked_input(
                    dataclasses.replace(node, host_key=host_key_for(node.droplet_name)))
                droplet = _create_droplet(node, key_id, data, on_event,
                                          (*announce, tag) if k == 1 else announce, vpc_uuid=vpc)
                created.add(k)
                _settle_creation(node, droplet, on_event)  # a concurrent deploy's older node wins
                vpc = vpc or getattr(droplet, "vpc_uuid", None) or None
            else:
                on_event("info", f"found droplet {droplet.name} (id {droplet.id}, {droplet.status})")
            droplets.append(droplet)
            report(_info(droplet, k in created))
        tagged = _join_tag(spec, droplets[0], tag, on_event)
        if operator_ip:  # before the nodes are reachable, so SSH is never open to all
            firewall = _ensure_allowlist(spec, droplets[0], operator_ip, on_event, cluster=tag)
        else:
            firewall = FirewallResult("skipped", None, [])
            on_event("info", "allowlist skipped: the Cloud Firewall was not touched "
                             "(nor the Swarm ports opened between the nodes)")
        infos = []
        for k, (node, droplet) in enumerate(zip(specs, droplets), 1):
            infos.append(report(_info(_wait_active(node, droplet, on_event), k in created)))
        ssh_ready = True
        for info in infos:
            if info.public_ipv4 is None:
                warnings.append(f"droplet {info.name} has no public IPv4 address yet; remote steps "
                                "need one (check the droplet's networking in the control panel)")
                on_event("warning", warnings[-1])
                ssh_ready = False
            elif spec.ssh_wait_timeout > 0:
                if not wait_for_ssh(info.public_ipv4, spec.ssh_port, spec.ssh_wait_timeout):
                    warnings.append(f"SSH on {info.name} ({info.public_ipv4}:{spec.ssh_port}) did not answer "
                                    f"within {spec.ssh_wait_timeout:g} s; check the firewall allowlist "
                                    "(your IP) or raise DO_SSH_WAIT_TIMEOUT")
                    on_event("warning", warnings[-1])
                    ssh_ready = False
            else:
                ssh_ready = False
        lead = infos[0]
        if not spec.domain:
            dns = DnsResult("skipped", [], "no DOMAIN configured: DNS records were not managed")
        elif lead.public_ipv4 is None:
            dns = DnsResult("skipped", [], f"DNS not updated: droplet {lead.name} has no public IPv4")
        else:
            dns = _ensure_dns(spec, lead.public_ipv4, on_event)
    if dns.warning and dns.warning not in warnings:
        warnings.append(dns.warning)
    if surplus:
        on_event("info", f"{len(surplus)} node(s) beyond the {spec.nodes} wanted kept for draining: "
                         + ", ".join(d.name for d in surplus))
    changed = (bool(created) or key_registered or tagged or firewall.status in ("created", "updated")
               or bool(dns.records_changed))
    return ClusterResult(nodes=tuple(infos), surplus=tuple(_info(d, False) for d in surplus), tag=tag,
                         vpc_uuid=vpc, firewall=firewall, dns=dns, warnings=warnings, changed=changed,
                         ssh_ready=ssh_ready, ssh_key_registered=key_registered)


# --- the plan: what provision() would do, from GET requests only -----------------------
@dataclass(frozen=True)
class FirewallPlan:
    action: str                 # create | update | attach | unchanged | skipped
    operator_ip: str | None
    ssh_from: list[str]         # the SSH sources the rules would allow
    ssh_from_now: list[str]     # the SSH sources the existing firewall allows ([] without one)


@dataclass(frozen=True)
class ProvisionPlan:
    """What provision() would do. ``droplet`` is the droplet found, None when one would be created
    (name/region/size/image are then the settings'); DNS changes use the DnsResult shape with
    actions create|update, and "to" None for the IP a new droplet has yet to get."""

    droplet_action: str         # create | found
    name: str
    region: str
    size: str
    image: str                  # the image a new droplet would get ("" for a found one)
    droplet: DropletInfo | None
    ssh_identity: str           # our public key in the account: register | present | unused (found droplet)
    firewall: FirewallPlan
    dns: DnsResult
    warnings: list[str]

    @property
    def changes(self) -> bool:
        return (self.droplet_action == "create" or self.ssh_identity == "register"
                or self.firewall.action not in ("unchanged", "skipped") or bool(self.dns.records_changed))


def _ssh_sources(rules: list[dict]) -> list[str]:
    return [a for r in rules if str(r.get("ports")) == "22" for a in (r.get("sources") or {}).get("addresses") or []]


def _plan_dns(spec: CloudSpec, ip: str | None, on_event: OnEvent) -> DnsResult:
    hosts = dns_hosts(spec.domain or "", spec.subdomains)
    zone, _, records = _read_dns(spec, hosts, on_event)
    if zone is None:
        return DnsResult("unmanaged", [], _unmanaged(hosts, ip or "the new droplet's IP"))
    return DnsResult("managed", [{"name": host, "action": "update" if rec else "create",
                                  "from": rec.data if rec else None, "to": ip}
                                 for host, _, rec in _dns_work(hosts, zone, records, ip)], None)


def plan_provision(spec: CloudSpec, on_event: OnEvent = _log_event,
                   account: AccountInfo | None = None) -> ProvisionPlan:
    """What provision() would do, found out with GET requests only (pyinfra's --dry, Ansible's
    check mode): nothing is created, changed or attached, and nothing waits for the droplet."""
    _checked_input(spec, planning=True)
    if account is None:
        account = check_token(spec, on_event)
    warnings: list[str] = []
    with _library_env(spec):
        found = _find(spec, on_event)
        _refuse_swarm_leader(spec, found)
        info = _info(found, created=False) if found is not None else None
        if info is None:
            key = "present" if _find_ssh_key(spec, on_event) is not None else "register"
        else:
            key = "unused"
            if info.status in ("off", "archive"):
                warnings.append(f"droplet {info.name} (id {info.id}) is {info.status!r}: a deploy would stop "
                                "there; power it on in the control panel, or delete it so a new one is created")
            elif info.public_ipv4 is None:
                warnings.append(f"droplet {info.name} has no public IPv4 address: a deploy could not reach it")
            if (info.size, info.region) != (spec.size, spec.region):
                warnings.append(f"droplet {info.name} is {info.size or '?'} in {info.region}, the settings say "
                                f"{spec.size} in {spec.region}: a deploy keeps the droplet as it is (resize it "
                                "in the control panel, or set DROPLET_SIZE / DROPLET_REGION to match)")
        if spec.firewall_enabled:
            state = _firewall_state(spec, info.id if info else None, on_event)
            firewall = FirewallPlan(state.action, state.operator_ip, _ssh_sources(state.inbound),
                                    _ssh_sources((state.current or {}).get("inbound_rules") or []))
        else:
            firewall = FirewallPlan("skipped", None, [], [])
        if not spec.domain:
            dns = DnsResult("skipped", [], "no DOMAIN configured: DNS records would not be managed")
        elif info is not None and info.public_ipv4 is None:
            dns = DnsResult("skipped", [], "DNS would not be updated: the droplet has no public IPv4")
        else:
            dns = _plan_dns(spec, info.public_ipv4 if info else None, on_event)
    if dns.warning and dns.status == "unmanaged":
        warnings.append(dns.warning)
    return ProvisionPlan(droplet_action="found" if info else "create", name=spec.droplet_name,
                         region=info.region if info else spec.region, size=info.size if info else spec.size,
                         image=spec.image if info is None else "", droplet=info, ssh_identity=key,
                         firewall=firewall, dns=dns, warnings=warnings)
