"""Security-header policy (NFR-001): parse a rule, compare an observed value, format a response head.

A policy maps a header name to a rule string:

    "max-age>=N"      HSTS-style: the max-age directive must be present and at least N seconds
    "one-of:a,b,c"    the effective value (last token of a comma list, as browsers read
                      Referrer-Policy fallbacks) must be one of a, b, c (case-insensitive)
    "present"         any value will do
    anything else     case-insensitive equality ("nosniff", "SAMEORIGIN")
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Mapping

import requests

RuleKind = Literal["max-age", "one-of", "present", "equals"]

_MAX_AGE_RULE = re.compile(r"^max-age\s*>=\s*(\d+)$", re.IGNORECASE)
_MAX_AGE_DIRECTIVE = re.compile(r'(?:^|;)\s*max-age\s*=\s*"?(\d+)"?\s*(?:;|$)', re.IGNORECASE)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


@dataclass(frozen=True)
class HeaderRule:
    header: str
    kind: RuleKind
    spec: str
    minimum: int = 0
    allowed: tuple[str, ...] = ()


def parse_rule(header: str, spec: str) -> HeaderRule:
    """Pure: validate one policy entry. Raises ValueError saying what is wrong and how to write it."""
    if not _HEADER_NAME.match(header or ""):
        raise ValueError(f"{header!r} is not a valid HTTP header name")
    text = (spec or "").strip()
    if not text:
        raise ValueError(f"the rule for {header} is empty; use e.g. 'present' or the exact value")
    if text.lower().startswith("max-age"):
        match = _MAX_AGE_RULE.match(text)
        if not match:
            raise ValueError(f"the rule for {header} must read 'max-age>=SECONDS', got {text!r}")
        return HeaderRule(header, "max-age", text, minimum=int(match.group(1)))
    if text.lower().startswith("one-of:"):
        allowed = tuple(v.strip().lower() for v in text[len("one-of:"):].split(",") if v.strip())
        if not allowed:
            raise ValueError(f"the rule for {header} lists no values; write 'one-of:a,b'")
        return HeaderRule(header, "one-of", text, allowed=allowed)
    if text.lower() == "present":
        return HeaderRule(header, "present", text)
    return HeaderRule(header, "equals", text)


def evaluate(rule: HeaderRule, observed: str | None) -> tuple[bool, str]:
    """Pure: (ok, reason). The reason names the header so a failure is readable on its own."""
    if observed is None:
        return False, f"{rule.header} missing"
    value = observed.strip()
    if rule.kind == "present":
        return True, f"{rule.header} present"
    if rule.kind == "equals":
        ok = value.lower() == rule.spec.lower()
        return ok, f"{rule.header} is {value!r}" + ("" if ok else f", expected {rule.spec!r}")
    if rule.kind == "one-of":
        tokens = [t.strip().lower() for t in value.split(",") if t.strip()]
        effective = tokens[-1] if tokens else ""
        ok = effective in rule.allowed
        return ok, f"{rule.header} is {value!r}" + (
            "" if ok else f", expected one of {', '.join(rule.allowed)}"
        )
    match = _MAX_AGE_DIRECTIVE.search(value)
    if not match:
        return False, f"{rule.header} is {value!r} without a max-age directive"
    age = int(match.group(1))
    ok = age >= rule.minimum
    return ok, f"{rule.header} max-age={age}" + ("" if ok else f", below {rule.minimum}")


def parse_policy(policy: Mapping[str, str]) -> list[HeaderRule]:
    return [parse_rule(header, spec) for header, spec in policy.items()]


# Cookie values are session material of whoever runs the site; the artifact only needs names.
_COOKIE_VALUE = re.compile(r"^([^=;\s]+)=[^;]*")


def format_head(response: requests.Response) -> str:
    """Status line plus response headers, like `curl -sI`, with Set-Cookie values masked."""
    version = {10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2"}.get(
        getattr(response.raw, "version", 11), "HTTP/1.1"
    )
    lines = [f"{version} {response.status_code} {response.reason or ''}".rstrip()]
    raw_headers = getattr(response.raw, "headers", None)
    items = raw_headers.items() if raw_headers is not None else response.headers.items()
    for name, value in items:
        if name.lower() == "set-cookie":
            value = _COOKIE_VALUE.sub(r"\1=<masked>", value)
        lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n"
