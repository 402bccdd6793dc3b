"""What the deployer refuses as a secret's value (pure): placeholders, short or guessable
values, values the redactor could not mask, URL-unsafe Redis passwords, basic-auth lines that
are not bcrypt, and an app role that is the superuser. Each refusal names the setting and how
to make a good value."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from core.errors import ConfigError
from deploy.redact import DISTINCTIVE_ONE_CLASS_LENGTH, MIN_SECRET_VALUE_LENGTH, char_classes, is_distinctive

# Example values an operator has not replaced yet.
PLACEHOLDER = re.compile(r"(?i)change[-_ ]?me|replace[-_ ]?me|^<.*>$|^x{4,}$")

# Stack secrets that must be long random values, and their minimum length.
_RANDOM_SECRETS = {"DJANGO_SECRET_KEY": 32, "INTERNAL_API_TOKEN": 32, "POSTGRES_PASSWORD": 16, "BACKUP_CIPHER_PASS": 32,
                   "POSTGRES_APP_PASSWORD": 32, "REDIS_PASSWORD": 32}
# Secrets compose puts into URLs (redis://:PASSWORD@redis:6379/0): no character that needs escaping.
_URL_SECRETS = ("REDIS_PASSWORD",)
_URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
# A PostgreSQL role name app-role.sh can use unquoted in messages and the operator in psql.
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# A random value of 16 or more characters practically never has fewer different characters.
_MIN_DISTINCT_CHARACTERS = 8
_TOKEN_COMMAND = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
_DO_TOKENS_PAGE = "https://cloud.digitalocean.com/account/api/tokens"
# Basic-auth settings hold one htpasswd line, user:bcrypt-hash (Traefik checks $2y$, $2b$, $2a$);
# the older apr1/SHA1 forms are cheap to brute-force once a hash leaks.
_BASIC_AUTH_SECRETS = ("FLOWER_BASIC_AUTH", "ADMIN_BASIC_AUTH")
_BCRYPT_LINE = re.compile(r"^[^:\s]+:\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
_BCRYPT_COMMAND = ("htpasswd -nbB admin 'a long password' (apache2-utils), or python3 -c 'import bcrypt; "
                   "print(\"admin:\" + bcrypt.hashpw(b\"a long password\", bcrypt.gensalt()).decode())'")


def refuse_weak_secret(name: str, value: str, example_value: str, where: str) -> None:
    """ConfigError when a secret is a placeholder, guessable, or too short or common to be
    masked in logs (the redactor masks such values only where they stand as a value)."""
    problem = _weakness(name, value, example_value)
    if problem is None:
        return
    if name in _BASIC_AUTH_SECRETS:
        fix = f"make the line with: {_BCRYPT_COMMAND}; then set {name} to it, in single quotes, in {where}"
    elif name == "DIGITALOCEAN_TOKEN":
        fix = f"create a read+write token at {_DO_TOKENS_PAGE} and set {name} to it in {where}"
    else:
        fix = f"generate a value with: {_TOKEN_COMMAND}; then set {name} to it in {where}"
    raise ConfigError(name, problem, fix)


def _weakness(name: str, value: str, example_value: str) -> str | None:
    if value == example_value or PLACEHOLDER.search(value):
        return "is a placeholder or the example value from stack/.env.example"
    if name in _BASIC_AUTH_SECRETS:
        if not _BCRYPT_LINE.match(value):
            return "is not a bcrypt htpasswd line (user:$2y$..., as htpasswd -B writes it)"
        return None
    minimum = _RANDOM_SECRETS.get(name)
    if minimum is None:
        if not is_distinctive(value):
            return (f"is too short or too common to be masked in logs (at least {MIN_SECRET_VALUE_LENGTH} "
                    f"characters, and {DISTINCTIVE_ONE_CLASS_LENGTH} for a lone word or number)")
        return None
    if len(value) < minimum:
        return f"is too short: {len(value)} characters, at least {minimum} are needed"
    if name in _URL_SECRETS and not _URL_SAFE.match(value):
        return "has characters a redis:// URL would need escaped: use letters, digits, - and _ only"
    if char_classes(value) < 2:
        return "uses one kind of character only (all letters or all digits): too easy to guess"
    if len(set(value)) < _MIN_DISTINCT_CHARACTERS:
        return (f"repeats too few different characters ({len(set(value))}; a random value has at "
                f"least {_MIN_DISTINCT_CHARACTERS})")
    return None


def check_app_role(stack_env: Mapping[str, Any], where: str) -> None:
    """The app's PostgreSQL role must be a plain name and not the superuser itself."""
    app, superuser = str(stack_env.get("POSTGRES_APP_USER") or ""), str(stack_env.get("POSTGRES_USER") or "")
    if not app:
        return  # a missing stack key is reported by require_stack_keys, with the others
    if not _ROLE_NAME.match(app):
        raise ConfigError("POSTGRES_APP_USER", f"={app!r} is not a plain role name",
                          f"use lower-case letters, digits and _ (e.g. stack_app) in {where}")
    if app == superuser:
        raise ConfigError("POSTGRES_APP_USER", "is the same role as POSTGRES_USER (the superuser)",
                          f"set POSTGRES_APP_USER to another name, e.g. stack_app, in {where}; "
                          "the stack creates that role and hands it the database")
