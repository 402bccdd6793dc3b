"""API settings from the environment; errors name the variable and the fix."""
from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Mapping


class ConfigError(RuntimeError):
    pass


@dataclass(frozen=True)
class Settings:
    redis_url: str
    result_url: str
    django_url: str
    internal_token: str
    rate_limit_rpm: int

    def __repr__(self) -> str:  # never print the token
        return f"Settings(redis_url={self.redis_url!r}, django_url={self.django_url!r}, rate_limit_rpm={self.rate_limit_rpm})"


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
        redis_url=env.get("REDIS_URL", "redis://redis:6379/0"),
        result_url=env.get("CELERY_RESULT_URL", "redis://redis:6379/1"),
        django_url=env.get("DJANGO_INTERNAL_URL", "http://django:8000").rstrip("/"),
        internal_token=_required(env, "INTERNAL_API_TOKEN", "set it in .env (the same value Django gets)"),
        rate_limit_rpm=rpm,
    )
