"""API settings from the environment; errors name the variable and the fix."""
from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Mapping


class ConfigError(RuntimeError):
    pass


# Only these DEPLOY_ENV values are "not production": anything else (a typo, unset) hides the
# docs and the versions, like the admin router in dynamic.yml (fail closed).
NON_PRODUCTION = ("staging", "development")


def is_production(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("DEPLOY_ENV", "").strip() not in NON_PRODUCTION


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at and creds else url


@dataclass(frozen=True)
class Settings:
    redis_url: str
    result_url: str
    django_url: str
    internal_token: str
    rate_limit_rpm: int
    production: bool = True

    def __repr__(self) -> str:  # never print the token or the Redis password
        return (f"Settings(redis_url={_without_password(self.redis_url)!r}, django_url={self.django_url!r}, "
                f"rate_limit_rpm={self.rate_limit_rpm}, production={self.production})")


def _required(env: Mapping[str, str], name: str, hint: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: {hint}")
    return value


def load_settings(env: Mapping[str, str] = os.environ) -> Settings:
    rpm_text = _required(env, "RATE_LIMIT_API_RPM", "set it in .env, e.g. RATE_LIMIT_API_RPM=60")
    try:
        rpm = int(rpm_text)
    except ValueError:
        rpm = 0
    if rpm < 1:
        raise ConfigError(
            f"RATE_LIMIT_API_RPM={rpm_text!r} is not a positive whole number: set e.g. RATE_LIMIT_API_RPM=60"
        )
    return Settings(
        # No default: Redis requires a password, which only the deployment's URL carries.
        redis_url=_required(env, "REDIS_URL", "set REDIS_PASSWORD in .env (compose builds redis://:PASSWORD@redis:6379/0)"),
        result_url=_required(env, "CELERY_RESULT_URL", "set REDIS_PASSWORD in .env (compose builds the URL)"),
        django_url=env.get("DJANGO_INTERNAL_URL", "http://django:8000").rstrip("/"),
        internal_token=_required(env, "INTERNAL_API_TOKEN", "set it in .env (the same value Django gets)"),
        rate_limit_rpm=rpm,
        production=is_production(env),
    )
