"""run_checks: every outside-in check, each isolated so one crash cannot hide the others."""
from __future__ import annotations

import json
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from urllib3.exceptions import InsecureRequestWarning

from deploy.checks.access import check_admin_host, check_admin_main_host, check_flower
from deploy.checks.cert import check_tls
from deploy.checks.context import Context, describe_error
from deploy.checks.dns import check_dns
from deploy.checks.headers import parse_policy
from deploy.checks.model import CheckResult, ChecksConfig, ChecksReport, PublicSite
from deploy.checks.pinned import pinned_session
from deploy.checks.ratelimit import check_rate_limit
from deploy.checks.routes import check_api_health, check_home, check_http_redirect, check_security_headers

CheckFn = Callable[[Context], "CheckResult | list[CheckResult]"]


def _plan(config: ChecksConfig) -> list[tuple[tuple[str, ...], CheckFn]]:
    """(names the check reports under, function), in order. The burst runs last so its 429s
    cannot spoil the other API requests."""
    header_names = tuple(f"header:{rule.header}" for rule in parse_policy(config.header_policy))
    return [
        (("dns",), check_dns),
        (("tls",), check_tls),
        (("http-redirect",), check_http_redirect),
        (("home", "latency-home"), check_home),
        (("api-health", "latency-api-health"), check_api_health),
        (header_names, check_security_headers),
        (("admin-main-host",), check_admin_main_host),
        (("admin-host",), check_admin_host),
        (("flower",), check_flower),
        (("rate-limit",), check_rate_limit),
    ]


def _guarded(names: tuple[str, ...], check: CheckFn, ctx: Context) -> list[CheckResult]:
    start = time.perf_counter()
    try:
        outcome = check(ctx)
        results = outcome if isinstance(outcome, list) else [outcome]
    except Exception as exc:  # noqa: BLE001 - isolation is the point: report it, go on
        error = describe_error(exc)
        results = [CheckResult(name, "fail", {"error": error}, None, f"check could not run: {error}")
                   for name in names]
    elapsed = time.perf_counter() - start
    for result in results:
        result.seconds = result.seconds or elapsed
    return results


def run_checks(target: PublicSite, config: ChecksConfig | None = None) -> ChecksReport:
    """Run every check against target and return results plus the http/ files to store.

    Pure data out: nothing is written here; the caller routes `files` through the redactor.
    """
    config = config or ChecksConfig()
    results: list[CheckResult] = []
    with pinned_session(target) as session, warnings.catch_warnings():
        # verify=False is deliberate (see pinned.py); one warning per request would drown the log.
        warnings.simplefilter("ignore", InsecureRequestWarning)
        ctx = Context(target, config, session)
        plan = _plan(config)
        # Side by side, each waiting on its own requests (a verify spent 1.2 s on them one after
        # another); then the header checks, which reuse the answers the first wave kept
        # (ctx.responses), then the burst, whose 429s must not spoil any other API request.
        later = [p for p in plan if p[1] in (check_security_headers, check_rate_limit)]
        first = [p for p in plan if p not in later]
        with ThreadPoolExecutor(max_workers=len(first), thread_name_prefix="check") as pool:
            for found in pool.map(lambda p: _guarded(p[0], p[1], ctx), first):
                results.extend(found)
        for names, check in later:
            results.extend(_guarded(names, check, ctx))
    if ctx.latency:
        ctx.files["http/latency.json"] = json.dumps(ctx.latency, indent=2) + "\n"
    return ChecksReport(results=results, files=dict(sorted(ctx.files.items())))
