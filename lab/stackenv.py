"""Values for the stack's variables in the lab: secrets generated once and kept (long random
values and bcrypt htpasswd lines, as Settings requires), the rest taken from
stack/.env.example with lab-specific answers (domain, dashboard allowlist)."""
from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping

import bcrypt

from deploy.redact import is_secret_name
from deploy.rotation import FALLBACK_OF, LOGIN
from remote.edge_config import DIR_VAR as EDGE_CONFIG_DIR

# Filled by the deployer on each deploy: the lab generates none (a value would be the operator's).
DEPLOYER_FILLED = frozenset({*FALLBACK_OF.values(), LOGIN, EDGE_CONFIG_DIR})


def parse_example(text: str) -> dict[str, str]:
    """KEY=value lines of an .env example, in order (quotes stripped, comments ignored)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def htpasswd_bcrypt(user: str, password: str) -> str:
    """`htpasswd -nbB` format (user:$2b$...), the only one Settings accepts for basic auth."""
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}"


def htpasswd_matches(line: str, user: str, password: str) -> bool:
    """True when ``line`` is a bcrypt htpasswd line for this user and password."""
    name, _, hashed = line.partition(":")
    try:
        return name == user and hashed.startswith("$2") and bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:  # not a bcrypt hash (an older lab's {SHA} line)
        return False


def lab_values(example: Mapping[str, str], domain: str, operator_ip: str,
               kept: Mapping[str, str], dashboard_password: str,
               token: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> dict[str, str]:
    """The stack's variables for the lab. `kept` holds earlier generated values: a database
    password must not change between two deploys of the same lab."""
    out: dict[str, str] = {}
    for key, value in example.items():
        if key in DEPLOYER_FILLED:
            out[key] = ""
        elif key.endswith("BASIC_AUTH"):
            # bcrypt salts differ per call: keep the line while it still matches the password.
            line = kept.get(key, "")
            out[key] = line if htpasswd_matches(line, "admin", dashboard_password) else htpasswd_bcrypt("admin", dashboard_password)
        elif key in kept:
            out[key] = kept[key]
        elif key == "DOMAIN":
            out[key] = domain
        elif key == "DASHBOARD_ALLOWLIST":
            out[key] = f"{operator_ip}/32"
        elif is_secret_name(key):
            # Settings refuses a secret's example value; what it calls secret, the lab generates.
            out[key] = token()
        else:
            out[key] = value
    return out


def format_env(values: Mapping[str, str]) -> str:
    """KEY=value lines python-dotenv reads back unchanged (single quotes: no expansion)."""
    lines = []
    for key, value in values.items():
        if re.fullmatch(r"[A-Za-z0-9_./:@,+=-]*", value):
            lines.append(f"{key}={value}")
        else:
            lines.append(f"{key}='{value}'")
    return "\n".join(lines) + "\n"
