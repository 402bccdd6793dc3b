"""One short line per check for people: the console table, summary.md and report.html show it;
run.json keeps the full observed data. Pure: a check's dict (CheckResult.to_dict) in, text out."""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Callable, Mapping

MAX_LINE = 80
# Let's Encrypt staging puts "(STAGING)" in both the issuer's O and CN; once is enough to read.
_TAG = re.compile(r"^\([^)]*\)\s*")


def clip(text: str, limit: int = MAX_LINE) -> str:
    """One line, at most ``limit`` characters (an ellipsis says something was cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def millis(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _requests(n: Any) -> str:
    return f"{n} request" + ("" if n == 1 else "s")


def _codes(statuses: list[Any]) -> str:
    counts = Counter("no answer" if s is None else str(s) for s in statuses)
    return ", ".join(f"{code} x{n}" for code, n in counts.items())


def _route(check: Mapping[str, Any], observed: Mapping[str, Any]) -> str:
    statuses = list(observed.get("statuses") or [])
    good = sum(1 for s in statuses if isinstance(s, int) and 200 <= s < 300)
    if statuses and good == len(statuses) and len(set(statuses)) == 1:
        line = f"{statuses[0]} on {good}/{_requests(len(statuses))}"
    else:
        line = f"{good}/{len(statuses)} answered 2xx ({_codes(statuses)})"
    if check.get("status") == "fail" and good == len(statuses) and observed.get("body") is not None:
        line += ", but " + _body(observed["body"])
    return line


def _body(text: str) -> str:
    """What a health body said, without pasting the JSON."""
    try:
        data = json.loads(text)
    except ValueError:
        return "the body is not JSON"
    return f"body status {data.get('status')!r}" if isinstance(data, dict) else "the body is not a JSON object"


def _latency(check: Mapping[str, Any], observed: Mapping[str, Any]) -> str:
    line = f"p50 {millis(observed['p50_s'])}, p95 {millis(observed['p95_s'])} over {observed['samples']} samples"
    if check.get("status") == "fail" and check.get("expected"):
        line += f" (budget: {check['expected']})"
    return line


def _tls(check: Mapping[str, Any], observed: Mapping[str, Any]) -> str:
    org, cn = observed.get("issuer_o"), observed.get("issuer_cn")
    tag = _TAG.match(org or "")
    if tag and cn and cn.startswith(tag.group()):
        cn = cn[tag.end():]
    issuer = " ".join(p for p in (org, cn) if p) or observed.get("issuer") or "unknown"
    notes = []
    if observed.get("issuer") and observed.get("issuer") == observed.get("subject"):
        notes.append("self-signed")
    if observed.get("expired"):
        notes.append(f"expired {observed.get('not_after')}")
    if observed.get("covers_domain") is False:
        notes.append("not issued for the domain")
    return f"issuer: {issuer}" + (f" ({', '.join(notes)})" if notes else "")


def _dns(check: Mapping[str, Any], observed: Mapping[str, Any]) -> str:
    addresses = observed.get("addresses") or []
    if not addresses:
        return f"does not resolve ({observed.get('error') or 'no address'})"
    return "resolves to " + ", ".join(addresses)


def _redirect(check: Mapping[str, Any], observed: Mapping[str, Any]) -> str:
    location = observed.get("location")
    return f"{observed.get('status')} -> {location}" if location else f"{observed.get('status')}, no redirect"


def _access(check: Mapping[str, Any], observed: Mapping[str, Any]) -> str:
    line = f"answered {observed.get('status')}"
    if observed.get("location"):
        line += f" -> {observed['location']}"
    challenge = observed.get("www_authenticate")
    if challenge:
        line += f", asks for credentials ({challenge.split()[0]})"
    return line


def _header(check: Mapping[str, Any], observed: Mapping[str, Any]) -> str:
    by_value: dict[str, list[str]] = {}
    for path, value in observed.items():
        by_value.setdefault("missing" if value is None else repr(value), []).append(path)
    return "; ".join(f"{value} on {', '.join(paths)}" for value, paths in by_value.items())


def _rate_limit(check: Mapping[str, Any], observed: Mapping[str, Any]) -> str:
    sent, headers = observed.get("requests"), observed.get("limit_headers")
    if headers is None:
        codes = ", ".join(f"{code} x{n}" for code, n in (observed.get("statuses") or {}).items())
        return f"no 429 in {_requests(sent)} ({codes or 'no answer'})"
    missing = [name for name, value in headers.items() if value is None]
    if missing:
        return f"429 after {_requests(sent)}, missing {', '.join(missing)}"
    return f"429 after {_requests(sent)}, Retry-After {headers.get('Retry-After')}"


Describe = Callable[[Mapping[str, Any], Mapping[str, Any]], str]
_BY_NAME: dict[str, Describe] = {
    "dns": _dns,
    "tls": _tls,
    "http-redirect": _redirect,
    "home": _route,
    "api-health": _route,
    "admin-main-host": _access,
    "admin-host": _access,
    "flower": _access,
    "rate-limit": _rate_limit,
}
_BY_PREFIX: tuple[tuple[str, Describe], ...] = (("latency-", _latency), ("header:", _header))


def human_line(check: Mapping[str, Any]) -> str:
    """What the check saw, in one short line ("p50 12 ms, p95 24 ms over 5 samples")."""
    name = str(check.get("name") or "")
    observed = check.get("observed")
    if check.get("status") == "skipped" or not isinstance(observed, Mapping):
        return clip(check.get("message") or "skipped")
    if set(observed) == {"error"}:  # the runner's isolation caught a crash inside the check
        return clip(f"could not run: {observed['error']}")
    describe = _BY_NAME.get(name) or next((fn for prefix, fn in _BY_PREFIX if name.startswith(prefix)), None)
    return clip(describe(check, observed) if describe else check.get("message") or "")
