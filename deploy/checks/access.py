"""Private surfaces stay private: the Django admin and Flower (FR-010, NFR-009)."""
from __future__ import annotations

import requests

from deploy.checks.context import Context
from deploy.checks.model import CheckResult

REFUSED = (401, 403)
# Text only Django's admin pages carry; an SPA fallback answering 200 for /admin/ is not the admin.
_DJANGO_ADMIN_MARKERS = ("django administration", "django site admin", 'id="login-form"')


def serves_django_admin(response: requests.Response) -> bool:
    """True when an anonymous request reached the Django admin (its page, or its login redirect)."""
    if 300 <= response.status_code < 400:
        return "/admin/login" in response.headers.get("Location", "")
    if response.status_code == 200:
        text = response.text[:20000].lower()
        return any(marker in text for marker in _DJANGO_ADMIN_MARKERS)
    return False


def _observed(url: str, response: requests.Response) -> dict:
    return {"url": url, "status": response.status_code,
            "location": response.headers.get("Location"),
            "www_authenticate": response.headers.get("WWW-Authenticate")}


def check_admin_main_host(ctx: Context) -> CheckResult:
    """/admin/ on the public host never reaches Django, in any environment."""
    url = ctx.url("/admin/")
    response = ctx.get(url)
    expected = "no Django admin on the public host"
    if serves_django_admin(response):
        return CheckResult("admin-main-host", "fail", _observed(url, response), expected,
                           f"{url} reaches the Django admin without credentials ({response.status_code}); "
                           "the admin must only be routed on the protected admin host")
    return CheckResult("admin-main-host", "pass", _observed(url, response), expected,
                       f"{url} answered {response.status_code}, not the Django admin")


def check_admin_host(ctx: Context) -> CheckResult:
    """admin.<domain>: absent in production, behind credentials elsewhere."""
    url = ctx.url("/admin/", subdomain=ctx.config.admin_host)
    response = ctx.get(url)
    observed, env = _observed(url, response), ctx.target.deploy_env
    if ctx.target.is_production:
        expected = "not publicly reachable in production"
        if serves_django_admin(response) or 200 <= response.status_code < 300:
            return CheckResult("admin-host", "fail", observed, expected,
                               f"{url} answered {response.status_code} in production: the Django admin must "
                               "not be public (remove the admin router when DEPLOY_ENV=production)")
        return CheckResult("admin-host", "pass", observed, expected,
                           f"{url} answered {response.status_code}: admin not public in production")
    expected = "401 or 403 without credentials"
    if response.status_code in REFUSED:
        return CheckResult("admin-host", "pass", observed, expected,
                           f"{url} refuses anonymous requests ({response.status_code}) in {env}")
    if serves_django_admin(response) or response.status_code < 400:
        return CheckResult("admin-host", "fail", observed, expected,
                           f"{url} answered {response.status_code} without credentials in {env}: put the "
                           "admin router behind basic auth (and the allowlist)")
    return CheckResult("admin-host", "warn", observed, expected,
                       f"{url} answered {response.status_code}; expected the admin router to refuse with 401/403")


def check_flower(ctx: Context) -> CheckResult:
    url = ctx.url("/", subdomain=ctx.config.flower_host)
    response = ctx.get(url)
    observed, expected = _observed(url, response), "401 or 403 without credentials"
    if response.status_code in REFUSED:
        return CheckResult("flower", "pass", observed, expected,
                           f"{url} refuses anonymous requests ({response.status_code})")
    if response.status_code < 400:
        return CheckResult("flower", "fail", observed, expected,
                           f"{url} answered {response.status_code} without credentials: Flower is open; "
                           "protect its router with basic auth (NFR-009)")
    return CheckResult("flower", "warn", observed, expected,
                       f"{url} answered {response.status_code}; expected Flower's router to refuse with 401/403")
