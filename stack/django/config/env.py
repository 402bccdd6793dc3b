"""Read settings from the environment with errors that name the variable and the fix."""
from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured


def required(name: str, hint: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(f"{name} is not set: {hint}")
    return value


def deploy_env() -> str:
    value = required("DEPLOY_ENV", "set it in .env to production, staging or development")
    if value not in {"production", "staging", "development"}:
        raise ImproperlyConfigured(
            f"DEPLOY_ENV={value!r} is not valid: use production, staging or development"
        )
    return value


ROLES = ("web", "worker", "beat", "flower")


def role() -> str:
    """DJANGO_ROLE: which container this is; it decides which secrets are required."""
    value = os.environ.get("DJANGO_ROLE", "web").strip()
    if value not in ROLES:
        raise ImproperlyConfigured(f"DJANGO_ROLE={value!r} is not valid: use one of {', '.join(ROLES)}")
    return value
