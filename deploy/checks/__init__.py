"""Outside-in checks that `inv verify` runs from the operator's machine.

Every request goes to the droplet's IP with the domain as SNI and Host, so the checks work
before DNS propagates. Pure data in and out: `run_checks(target, config) -> ChecksReport`.
"""
from deploy.checks.cert import served_certificate
from deploy.checks.model import (
    DEFAULT_HEADER_POLICY,
    ChecksConfig,
    ChecksConfigError,
    CheckResult,
    ChecksReport,
    PublicSite,
    config_from_settings,
    rate_limit_burst_size,
)
from deploy.checks.runner import run_checks

__all__ = [
    "DEFAULT_HEADER_POLICY",
    "ChecksConfig",
    "ChecksConfigError",
    "CheckResult",
    "ChecksReport",
    "PublicSite",
    "config_from_settings",
    "rate_limit_burst_size",
    "run_checks",
    "served_certificate",
]
