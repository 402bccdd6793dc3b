"""Data in and out of the outside-in checks: what to check, how, and what was found."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from core.errors import EXIT_CONFIG, OperatorError
from deploy import resolvers
from deploy.checks.headers import parse_policy
from deploy.resolvers import NameServer

Status = Literal["pass", "warn", "fail", "skipped"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "skipped")
# How bad a status is when several are folded into one verdict.
_SEVERITY = {"pass": 0, "skipped": 1, "warn": 2, "fail": 3}

# Mirrors the stack's Traefik template, which fails closed: only these two render the admin router.
NON_PRODUCTION_ENVS = frozenset({"staging", "development"})

DEFAULT_HEADER_POLICY: dict[str, str] = {
    # 180 days: the minimum most scanners accept; preload lists want a year.
    "Strict-Transport-Security": "max-age>=15552000",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    # Conservative = never sends the full URL cross-origin.
    "Referrer-Policy": "one-of:no-referrer,same-origin,strict-origin,strict-origin-when-cross-origin",
}
DEFAULT_RATE_LIMIT_PATH = "/api/notes"
DEFAULT_RATE_LIMIT_REQUESTS = 130

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class ChecksConfigError(OperatorError, ValueError):
    """A checks setting is unusable; the message names the setting and how to fix it."""

    exit_code = EXIT_CONFIG
    outcome = "config-error"


def _valid_hostname(name: str) -> bool:
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def rate_limit_burst_size(rpm: int, margin: int = 10) -> int:
    """How many requests the burst may send (it stops at the first 429). The API counts per
    fixed minute, and a burst can straddle a minute boundary: twice the limit, plus a margin,
    crosses it within one window whatever the split."""
    if rpm < 1:
        raise ChecksConfigError(f"RATE_LIMIT_API_RPM must be a whole number >= 1, got {rpm}")
    return 2 * rpm + max(margin, rpm // 10)


@dataclass(frozen=True)
class PublicSite:
    """Where to send the checks: the droplet's IP, reached with the domain as SNI and Host."""

    ip: str
    domain: str
    deploy_env: str
    https_port: int = 443
    http_port: int = 80

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.ip)
        except ValueError:
            raise ChecksConfigError(
                f"droplet IP {self.ip!r} is not an IP address; pass the droplet's public "
                "address (e.g. 203.0.113.10), not a hostname"
            ) from None
        domain = (self.domain or "").strip().lower().rstrip(".")
        if not _valid_hostname(domain):
            raise ChecksConfigError(
                f"DOMAIN {self.domain!r} is not a valid host name; set DOMAIN to the site's "
                "name without scheme or path (e.g. app.example.com)"
            )
        object.__setattr__(self, "domain", domain)
        if not (self.deploy_env or "").strip():
            raise ChecksConfigError("DEPLOY_ENV is empty; set it to production, staging or development")
        for name in ("https_port", "http_port"):
            port = getattr(self, name)
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ChecksConfigError(f"{name} must be a port number 1-65535, got {port!r}")

    @property
    def is_production(self) -> bool:
        return self.deploy_env.strip().lower() not in NON_PRODUCTION_ENVS

    def host(self, subdomain: str | None = None) -> str:
        return f"{subdomain}.{self.domain}" if subdomain else self.domain


@dataclass(frozen=True)
class ChecksConfig:
    """How the checks run. Field names follow invoke.yaml's deploy.checks section."""

    samples: int = 5
    timeout: float = 10
    p95_budget_s: float = 5.0
    rate_limit_burst: bool = True
    rate_limit_requests: int = DEFAULT_RATE_LIMIT_REQUESTS
    rate_limit_path: str = DEFAULT_RATE_LIMIT_PATH
    header_policy: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_HEADER_POLICY))
    flower_host: str = "flower"
    admin_host: str = "admin"
    # Name servers the DNS check asks (DNS_RESOLVER); () asks this machine's resolver.
    dns_resolvers: tuple[NameServer, ...] = ()
    # The ACME test CA Traefik was pointed at (ACME_TEST_CA); None means Let's Encrypt staging.
    test_ca_server: str | None = None
    # Seconds the TLS check keeps asking while Traefik still serves its default certificate.
    cert_wait_s: float = 0.0

    def __post_init__(self) -> None:
        if any(isinstance(s, str) for s in self.dns_resolvers):
            object.__setattr__(self, "dns_resolvers", resolvers.parse(
                [s if isinstance(s, str) else str(s) for s in self.dns_resolvers]))
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ChecksConfigError(f"checks.samples must be a whole number >= 1, got {self.samples!r}")
        if not isinstance(self.cert_wait_s, (int, float)) or not 0 <= self.cert_wait_s <= 600:
            raise ChecksConfigError(f"checks.cert_wait must be 0 to 600 seconds, got {self.cert_wait_s!r}")
        for name in ("timeout", "p95_budget_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ChecksConfigError(f"checks.{name} must be a number of seconds > 0, got {value!r}")
        if not isinstance(self.rate_limit_requests, int) or self.rate_limit_requests < 1:
            raise ChecksConfigError(
                "checks.rate_limit_requests must be a whole number >= 1 (RATE_LIMIT_API_RPM plus "
                f"a margin), got {self.rate_limit_requests!r}"
            )
        if not self.rate_limit_path.startswith("/"):
            raise ChecksConfigError(
                f"checks.rate_limit_path must be an absolute path like /api/notes, got {self.rate_limit_path!r}"
            )
        for name in ("flower_host", "admin_host"):
            if not _LABEL.match(getattr(self, name)):
                raise ChecksConfigError(
                    f"checks.{name} must be a single DNS label such as 'flower', got {getattr(self, name)!r}"
                )
        try:
            parse_policy(self.header_policy)
        except ValueError as exc:
            raise ChecksConfigError(f"checks.header_policy: {exc}") from None


# invoke.yaml's deploy.checks keys -> ChecksConfig fields (the yaml keeps the shorter name).
_YAML_KEYS = {"p95_budget": "p95_budget_s", "dns_resolver": "dns_resolvers", "cert_wait": "cert_wait_s"}


def config_from_settings(section: Mapping[str, Any], rate_limit_rpm: int | None = None) -> ChecksConfig:
    """Build ChecksConfig from invoke.yaml's deploy.checks section (plus RATE_LIMIT_API_RPM).

    Unknown keys are an error rather than silently ignored: a typo would otherwise turn a check off.
    """
    known = {f for f in ChecksConfig.__dataclass_fields__}
    values: dict[str, Any] = {}
    for key, value in section.items():
        name = _YAML_KEYS.get(key, key)
        if name not in known:
            raise ChecksConfigError(
                f"unknown setting deploy.checks.{key} in invoke.yaml; known: "
                f"{', '.join(sorted(set(known) - set(_YAML_KEYS.values()) | set(_YAML_KEYS)))}"
            )
        values[name] = value
    if rate_limit_rpm is not None and "rate_limit_requests" not in values:
        values["rate_limit_requests"] = rate_limit_burst_size(rate_limit_rpm)
    return ChecksConfig(**values)


@dataclass
class CheckResult:
    name: str
    status: Status
    observed: Any
    expected: Any
    message: str
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "observed": self.observed,
            "expected": self.expected,
            "message": self.message,
            "seconds": round(self.seconds, 4),
        }


def worst(statuses: list[Status] | tuple[Status, ...]) -> Status:
    return max(statuses, key=_SEVERITY.__getitem__, default="pass")


@dataclass
class ChecksReport:
    results: list[CheckResult]
    files: dict[str, str]

    @property
    def status(self) -> Status:
        """The worst status of the results that ran (a skipped check neither passes nor fails)."""
        return worst([r.status for r in self.results if r.status != "skipped"])

    def by_status(self, status: Status) -> list[CheckResult]:
        return [r for r in self.results if r.status == status]

    def get(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r}; have {[r.name for r in self.results]}")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "results": [r.to_dict() for r in self.results]}
