"""The API rate limit bites (NFR-002): a bounded burst must meet a 429 with the limit headers."""
from __future__ import annotations

from collections import Counter

import requests

from deploy.checks.context import Context, describe_error
from deploy.checks.headers import format_head
from deploy.checks.model import CheckResult

LIMIT_HEADERS = ("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def check_rate_limit(ctx: Context) -> CheckResult:
    url = ctx.url(ctx.config.rate_limit_path)
    budget = ctx.config.rate_limit_requests
    expected = f"429 with {', '.join(LIMIT_HEADERS)} within {budget} requests"
    if not ctx.config.rate_limit_burst:
        return CheckResult("rate-limit", "skipped", None, expected, "burst check turned off (checks.rate_limit_burst)")
    statuses: Counter[int] = Counter()
    limited: requests.Response | None = None
    error = None
    sent = 0
    # Sequential on purpose: bounded, and stops at the first 429 so the API is hit no harder than needed.
    while sent < budget:
        sent += 1
        try:
            response = ctx.get(url)
        except requests.RequestException as exc:
            error = describe_error(exc)
            break
        statuses[response.status_code] += 1
        if response.status_code == 429:
            limited = response
            break
    log = [f"GET {url} x{sent} (stop at first 429 or after {budget})",
           "statuses: " + ", ".join(f"{code} x{n}" for code, n in sorted(statuses.items()))]
    if error:
        log.append(f"error on request {sent}: {error}")
    if limited is not None:
        log += ["", "first 429:", format_head(limited)]
    ctx.files["http/rate-limit.txt"] = "\n".join(log) + "\n"
    observed = {"url": url, "requests": sent, "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "limit_headers": {h: limited.headers.get(h) for h in LIMIT_HEADERS} if limited is not None else None}
    if error:
        return CheckResult("rate-limit", "fail", observed, expected, f"burst stopped at request {sent}: {error}")
    if limited is None:
        return CheckResult("rate-limit", "fail", observed, expected,
                           f"no 429 after {sent} requests to {url} (statuses {dict(statuses)}): is the API rate "
                           "limit (RATE_LIMIT_API_RPM) enforced on this path? set checks.rate_limit_path if not")
    missing = [h for h in LIMIT_HEADERS if limited.headers.get(h) is None]
    if missing:
        return CheckResult("rate-limit", "fail", observed, expected,
                           f"429 after {sent} requests but missing {', '.join(missing)}")
    return CheckResult("rate-limit", "pass", observed, expected,
                       f"429 after {sent} requests with {', '.join(LIMIT_HEADERS)}")
