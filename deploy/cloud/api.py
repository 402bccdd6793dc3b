"""The DigitalOcean API itself: what a run asks of it (CloudSpec), the typed errors, and `_call`.

Typed errors (CloudError and subclasses) carry a message and an actionable hint and never the
token. Every API call goes through `_call`, which retries transient failures (429, 5xx, timeouts,
connection errors) with exponential backoff + jitter, bounded by attempts and total time,
honouring Retry-After / ratelimit-reset.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import digitalocean
import requests
from digitalocean.baseapi import (DataReadError, EndPointError, JSONReadError, NotFoundError,
                                  TokenError)

from core.errors import EXIT_CONFIG, EXIT_LOCKED, EXIT_TOKEN_REJECTED, OperatorError
from deploy.hostkey import HostKey

DEFAULT_IMAGE = "ubuntu-24-04-x64"
DEFAULT_OPERATOR_IP_URL = "https://api.ipify.org"
ENDPOINT_VAR = "DIGITALOCEAN_END_POINT"
TIMEOUT_VAR = "PYTHON_DIGITALOCEAN_REQUEST_TIMEOUT_SEC"
TOKEN_CHECK_BUDGET = 5.0  # seconds of retrying allowed while checking the token
TOKEN_HINT = ("create a read+write token at https://cloud.digitalocean.com/account/api/tokens "
              "and set DIGITALOCEAN_TOKEN in your .env")

log = logging.getLogger("deploy.cloud")  # the adapter's one logger, as before it was a package
T = TypeVar("T")
OnEvent = Callable[[str, str], None]


def _log_event(level: str, message: str) -> None:
    log.log(logging.WARNING if level == "warning" else logging.INFO, message)


# --- data in ------------------------------------------------------------------------------
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


# --- token ------------------------------------------------------------------------------
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
