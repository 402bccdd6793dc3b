"""Public routes: home page and /api/health answer OK in time (NFR-007), carry the security
headers (NFR-001), and port 80 sends everyone to HTTPS."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable
from urllib.parse import urlsplit

import requests

from deploy.checks.context import UNVERIFIED_NOTE, Context, describe_error
from deploy.checks.headers import evaluate, format_head, parse_policy
from deploy.checks.model import CheckResult

HOME_PATH = "/"
HEALTH_PATH = "/api/health"
HEAD_FILES = {HOME_PATH: "http/headers-root.txt", HEALTH_PATH: "http/headers-api-health.txt"}


@dataclass(frozen=True)
class Sample:
    status: int | None
    seconds: float
    error: str | None = None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: a value that was actually observed, never an interpolation."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def sample_route(ctx: Context, url: str, count: int) -> list[Sample]:
    """GET url count times, each on a fresh connection (the cost a first-time visitor pays)."""
    samples = []
    for _ in range(count):
        # "Connection: close" alone is not enough: an edge that answers without echoing it
        # leaves the socket pooled, and the next sample would reuse (or race) a closing one.
        ctx.session.close()
        start = time.perf_counter()
        try:
            response = ctx.get(url, headers={"Connection": "close"})
            _ = response.content  # the body is part of the wait
            samples.append(Sample(response.status_code, time.perf_counter() - start))
            ctx.responses.setdefault(url, response)
        except requests.RequestException as exc:
            samples.append(Sample(None, time.perf_counter() - start, describe_error(exc)))
    ctx.session.close()
    return samples


def _body_check_health(response: requests.Response) -> str | None:
    """None when /api/health says ok, else what is wrong with it."""
    try:
        body = response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "no content type")
        return (f"answered {response.status_code} but not JSON ({kind}): the request probably fell "
                "through to the front end; check the API router's PathPrefix(`/api`)")
    status = body.get("status") if isinstance(body, dict) else None
    if str(status).lower() != "ok":
        return f"JSON status is {status!r}, expected 'ok'"
    return None


def _route_results(ctx: Context, name: str, path: str,
                   body_check: Callable[[requests.Response], str | None] | None) -> list[CheckResult]:
    url = ctx.url(path)
    samples = sample_route(ctx, url, ctx.config.samples)
    statuses = [s.status for s in samples]
    errors = sorted({s.error for s in samples if s.error})
    observed: dict = {"url": url, "statuses": statuses, "errors": errors}
    bad = [s for s in samples if s.status is None or not 200 <= s.status < 300]
    problem = None
    if bad:
        problem = f"{len(bad)} of {len(samples)} requests did not answer 2xx (statuses {statuses})"
        if errors:
            problem += f"; errors: {'; '.join(errors)}"
    elif body_check is not None:
        problem = body_check(ctx.responses[url])
        observed["body"] = ctx.responses[url].text[:300]
    ok_result = CheckResult(
        name, "fail" if problem else "pass", observed, "2xx on every request",
        f"{url} {problem}" if problem else f"{url} answered 2xx {len(samples)}/{len(samples)} times; {UNVERIFIED_NOTE}",
    )
    return [ok_result, _latency_result(ctx, f"latency-{name}", url, path, samples)]


def _latency_result(ctx: Context, name: str, url: str, path: str, samples: list[Sample]) -> CheckResult:
    # A failed request still cost the visitor its time, so it counts in the percentiles.
    seconds = [s.seconds for s in samples]
    budget = ctx.config.p95_budget_s
    p50, p95 = percentile(seconds, 50), percentile(seconds, 95)
    ctx.latency[path] = {"url": url, "p50_s": round(p50, 4), "p95_s": round(p95, 4),
                         "budget_p95_s": budget, "samples": [asdict(s) for s in samples]}
    observed = {"p50_s": round(p50, 4), "p95_s": round(p95, 4), "samples": len(samples)}
    failed = sum(1 for s in samples if s.status is None)
    if p95 > budget:
        return CheckResult(name, "fail", observed, f"p95 <= {budget} s",
                           f"{url} p95 {p95:.3f} s is over the {budget} s budget (NFR-007)")
    if failed:
        return CheckResult(name, "fail", observed, f"p95 <= {budget} s",
                           f"{url}: {failed} of {len(samples)} requests failed, so latency is not representative")
    return CheckResult(name, "pass", observed, f"p95 <= {budget} s",
                       f"{url} p50 {p50:.3f} s, p95 {p95:.3f} s within {budget} s")


def check_home(ctx: Context) -> list[CheckResult]:
    return _route_results(ctx, "home", HOME_PATH, None)


def check_api_health(ctx: Context) -> list[CheckResult]:
    return _route_results(ctx, "api-health", HEALTH_PATH, _body_check_health)


def _response_for(ctx: Context, path: str) -> requests.Response | str:
    """The response already sampled for path, else a fresh one, else the error text."""
    url = ctx.url(path)
    if url not in ctx.responses:
        try:
            ctx.responses[url] = ctx.get(url)
        except requests.RequestException as exc:
            return describe_error(exc)
    return ctx.responses[url]


def check_security_headers(ctx: Context) -> list[CheckResult]:
    """One result per policy header, comparing it on every public route."""
    answers = {path: _response_for(ctx, path) for path in HEAD_FILES}
    for path, answer in answers.items():
        if isinstance(answer, requests.Response):
            ctx.files[HEAD_FILES[path]] = format_head(answer)
    results = []
    for rule in parse_policy(ctx.config.header_policy):
        observed: dict[str, str | None] = {}
        problems, unreachable = [], []
        for path, answer in answers.items():
            if not isinstance(answer, requests.Response):
                unreachable.append(path)
                continue
            value = answer.headers.get(rule.header)
            observed[path] = value
            ok, reason = evaluate(rule, value)
            if not ok:
                problems.append(f"{reason} on {path}")
        name = f"header:{rule.header}"
        if not observed:
            results.append(CheckResult(name, "skipped", observed, rule.spec,
                                       f"no response from {', '.join(unreachable)}: see the home and api-health checks"))
            continue
        note = f" (no response from {', '.join(unreachable)})" if unreachable else ""
        if problems:
            results.append(CheckResult(name, "fail", observed, rule.spec, "; ".join(problems) + note))
        else:
            results.append(CheckResult(name, "pass", observed, rule.spec,
                                       f"{rule.header} meets {rule.spec!r} on {', '.join(observed)}{note}"))
    return results


def check_http_redirect(ctx: Context) -> CheckResult:
    url = ctx.url("/", scheme="http")
    response = ctx.get(url)
    ctx.files["http/redirect.txt"] = f"GET {url}\n" + format_head(response)
    location = response.headers.get("Location", "")
    observed = {"status": response.status_code, "location": location or None}
    expected = f"3xx with Location https://{ctx.target.domain}/..."
    parts = urlsplit(location)
    if 300 <= response.status_code < 400 and parts.scheme == "https" and parts.hostname == ctx.target.domain:
        return CheckResult("http-redirect", "pass", observed, expected,
                           f"port {ctx.target.http_port} answers {response.status_code} -> {location}")
    return CheckResult("http-redirect", "fail", observed, expected,
                       f"{url} answered {response.status_code} with Location {location or '(none)'}: add an "
                       "HTTP->HTTPS redirect on the web entrypoint (Traefik redirections.entryPoint)")
