"""Secrets an operator changed in .env since the live release (pure: no I/O).

A deploy compares the env it is about to push with the live release's snapshot on the droplet,
by value, in memory (neither value is written anywhere). Every changed secret is named in the
run (names only). The database and Redis passwords are applied live, without a restart
(remote/stack_secrets.py, deploy/live_secrets.py): PostgreSQL gets the new app password on the
app role's other login (POSTGRES_APP_LOGIN flips between the role and ``<role>_alt``), so the
old clients and the new ones both log in until the old login is retired after the cutover;
Redis accepts both passwords meanwhile. DJANGO_SECRET_KEY: the new release gets the old key in
DJANGO_SECRET_KEY_FALLBACKS, so Django still accepts what it signed with it (signed-in sessions,
password-reset links); it stays until the next rotation replaces it, so a session survives one
rotation.
"""
from __future__ import annotations

import io
from collections.abc import Mapping

from dotenv import dotenv_values

from remote.stack_secrets import LOGIN, alternate

SECRET_KEY = "DJANGO_SECRET_KEY"
FALLBACKS = "DJANGO_SECRET_KEY_FALLBACKS"
TOKEN_FALLBACKS = "INTERNAL_API_TOKEN_FALLBACKS"
# A value the new release still accepts from the one before the last rotation, by key: the
# deployer fills the list; an operator's own value wins.
FALLBACK_OF = {SECRET_KEY: FALLBACKS, "INTERNAL_API_TOKEN": TOKEN_FALLBACKS}
# What happens with each secret (said in the run before it happens).
RESTARTS = {
    "POSTGRES_PASSWORD": "set in the running PostgreSQL, nothing restarts",
    "POSTGRES_APP_PASSWORD": "the other app login takes it in the running PostgreSQL; django and the worker "
                             "start with it; the old login is retired once they serve",
    "REDIS_PASSWORD": "the running Redis accepts both until every client uses the new one, then the new one alone",
    "DJANGO_SECRET_KEY": "django starts with it; the old key stays a fallback for one rotation",
    "INTERNAL_API_TOKEN": "django starts with it and still accepts the old one (for one rotation), then the api",
}


# What a migration needs from the database as it runs now: rotated, the release's one-offs run
# with the live release's env, whose login keeps its password until the cutover has finished.
DATABASE = frozenset({"POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD"})


def parse(text: str) -> dict[str, str]:
    """An env file as the deployer writes it (single-quoted values are literal)."""
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def changed(live: Mapping[str, str], new: Mapping[str, str], secret: set[str] | frozenset[str]) -> list[str]:
    """The secrets (names in ``secret``) the live release has with another non-empty value than
    ``new``; the deployer's own fallback is not one the operator changed."""
    deployers = set(FALLBACK_OF.values())
    return sorted(n for n in secret if n not in deployers and live.get(n) and new.get(n) and live[n] != new[n])


def fallbacks(live: Mapping[str, str], new: Mapping[str, str], key: str = SECRET_KEY) -> str:
    """The fallbacks of ``key`` (DJANGO_SECRET_KEY_FALLBACKS, INTERNAL_API_TOKEN_FALLBACKS) for the
    release being pushed: the operator's own value when set; else the live value when it changed
    (one rotation back); else what the live release had."""
    name = FALLBACK_OF[key]
    if new.get(name):
        return new[name]
    if live.get(key) and new.get(key) and live[key] != new[key]:
        return live[key]
    return live.get(name, "")


def app_login(live: Mapping[str, str], new: Mapping[str, str]) -> str:
    """POSTGRES_APP_LOGIN for the release being pushed: the live release's login, or the other of
    the two when the app password changed (so the old one keeps working until the cutover ends).
    A first release, or another POSTGRES_APP_USER, starts on the app role itself."""
    user = new.get("POSTGRES_APP_USER", "")
    if not live or live.get("POSTGRES_APP_USER") != user:
        return user
    current = live.get(LOGIN) or user
    if live.get("POSTGRES_APP_PASSWORD") != new.get("POSTGRES_APP_PASSWORD"):
        return alternate(user) if current == user else user
    return current
