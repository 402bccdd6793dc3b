"""Secrets an operator changed in .env since the live release (pure: no I/O).

A deploy compares the env it is about to push with the live release's snapshot on the droplet,
by value, in memory (neither value is written anywhere). Every changed secret is named in the
run (names only). The stack applies each new value when the service that holds it starts:
PostgreSQL sets both roles' passwords from its environment on every start
(stack/postgres/app-role.sh), Redis its requirepass, Django its key. DJANGO_SECRET_KEY needs
one thing more: the new release gets the old key in DJANGO_SECRET_KEY_FALLBACKS, so Django
still accepts what it signed with it (signed-in sessions, password-reset links); it stays until
the next rotation replaces it, so a session survives one rotation.
"""
from __future__ import annotations

import io
from collections.abc import Mapping

from dotenv import dotenv_values

SECRET_KEY = "DJANGO_SECRET_KEY"
FALLBACKS = "DJANGO_SECRET_KEY_FALLBACKS"
# What restarts with each secret (said in the run before it happens).
RESTARTS = {
    "POSTGRES_PASSWORD": "PostgreSQL restarts with it",
    "POSTGRES_APP_PASSWORD": "PostgreSQL restarts with it, and django and the worker with the new one",
    "REDIS_PASSWORD": "Redis restarts with it, and every service that uses Redis with the new one",
    "DJANGO_SECRET_KEY": "django starts with it; the old key stays a fallback for one rotation",
}


# What a migration needs from the database as it runs now: rotated, the release's one-offs run
# with the live release's env until PostgreSQL is recreated with the new values.
DATABASE = frozenset({"POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD"})


def parse(text: str) -> dict[str, str]:
    """An env file as the deployer writes it (single-quoted values are literal)."""
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def changed(live: Mapping[str, str], new: Mapping[str, str], secret: set[str] | frozenset[str]) -> list[str]:
    """The secrets (names in ``secret``) the live release has with another non-empty value than
    ``new``; the deployer's own fallback is not one the operator changed."""
    return sorted(n for n in secret if n != FALLBACKS and live.get(n) and new.get(n) and live[n] != new[n])


def fallbacks(live: Mapping[str, str], new: Mapping[str, str]) -> str:
    """DJANGO_SECRET_KEY_FALLBACKS for the release being pushed: the operator's own value when
    set; else the live key when the key changed (one rotation back); else what the live release
    had."""
    if new.get(FALLBACKS):
        return new[FALLBACKS]
    if live.get(SECRET_KEY) and new.get(SECRET_KEY) and live[SECRET_KEY] != new[SECRET_KEY]:
        return live[SECRET_KEY]
    return live.get(FALLBACKS, "")
