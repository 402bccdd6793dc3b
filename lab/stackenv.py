"""Values for the stack's variables in the lab: secrets generated once and kept, the rest
taken from stack/.env.example with lab-specific answers (domain, dashboard allowlist)."""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable, Mapping

_PLACEHOLDER = re.compile(r"(?i)change[-_ ]?me|replace[-_ ]?me|^<.*>$|\$apr1\$examples\$")
_SECRETISH = re.compile(r"(?i)PASSWORD|SECRET|TOKEN|_KEY$|BASIC_AUTH")


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


def htpasswd_sha(user: str, password: str) -> str:
    """`htpasswd -s` format ({SHA}), understood by Traefik's basic auth, no '$' to escape."""
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    return f"{user}:{{SHA}}{digest}"


def lab_values(example: Mapping[str, str], domain: str, operator_ip: str,
               kept: Mapping[str, str], dashboard_password: str,
               token: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> dict[str, str]:
    """The stack's variables for the lab. `kept` holds earlier generated values: a database
    password must not change between two deploys of the same lab."""
    out: dict[str, str] = {}
    for key, value in example.items():
        if key in kept:
            out[key] = kept[key]
        elif key == "DOMAIN":
            out[key] = domain
        elif key == "DASHBOARD_ALLOWLIST":
            out[key] = f"{operator_ip}/32"
        elif key.endswith("BASIC_AUTH"):
            out[key] = htpasswd_sha("admin", dashboard_password)
        elif _SECRETISH.search(key) and (not value or _PLACEHOLDER.search(value)):
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
