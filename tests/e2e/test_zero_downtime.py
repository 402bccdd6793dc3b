"""Releases under traffic, on the lab: a prober sends ~26 req/s (20/s on /, 5/s on /api/health,
1/s on /api/notes, which reaches Django through the API) while the deployer rolls forward, rolls
back, and meets a release that never becomes healthy. Any non-2xx/3xx answer or connection
error is a failed request, and none is allowed; every failure is logged in probes.log with its
route and status (benchmarks/rollout.py --repeat N prints Traefik's own lines about each).
Before start-first cutover: 53 of 417; the last strays (a 502 on a connection the old api closed,
read timeouts on a dial to a replaced container's address) are explained and fixed in
docs/figures.md, "Releases under traffic".

Runs after test_lab_deploy.py on the same lab droplet."""
from __future__ import annotations

import re

import pytest

from lab.prober import DEFAULT_ROUTES, Prober
from tests.e2e.conftest import QUIET, STATE
from tests.e2e.test_lab_deploy import api

pytestmark = [pytest.mark.lab, pytest.mark.docker]

# The prober's /api traffic must not exhaust its own rate-limit bucket (Traefik allows 4x, the
# API 1x RATE_LIMIT_API_RPM per client and minute).
UNDER_LOAD = {**QUIET, "RATE_LIMIT_API_RPM": "1200"}


def probed(lab, *args: str):
    with Prober(STATE["ip"], lab.values["DOMAIN"], DEFAULT_ROUTES) as prober:
        res = lab.inv(*args, extra=UNDER_LOAD)
    report = prober.report
    failures = [(p.route, p.at, p.status, p.error) for p in report.failed]
    (lab.tmp / "probes.log").open("a").write(f"$ {' '.join(args)}: {report.summary()} failures={failures}\n")
    return res, report


MAX_SILENCE_S = 3.0


MIN_RATE = 15.0     # requests a second the prober (26 a second) must keep up while the deploy runs


def assert_available(report, least: int = 50) -> None:
    """No failed request, and the prober sent all along: at least ``least`` requests, at
    MIN_RATE a second over the time it probed, and no moment of more than MAX_SILENCE_S without
    one begun (all routes stuck at once is an outage too). How many a deploy gets depends on its
    length (a no-change deploy is about 4 s), so the floor is low and the rate carries the rest."""
    summary = report.summary()
    starts = sorted(p.at for p in report.probes)
    assert summary["sent"] >= least, summary
    assert summary["sent"] >= MIN_RATE * (starts[-1] - starts[0]), summary
    silence = max((b - a for a, b in zip(starts, starts[1:])), default=0.0)
    assert silence <= MAX_SILENCE_S, f"no request begun for {silence:.1f} s: {summary}"
    assert report.failed == [], summary


def live_api_version(lab) -> str:
    session, base = api(lab, STATE["ip"])
    return session.get(f"{base}/health", timeout=10).json()["versions"]["api"]


def bump(lab, version: str) -> None:
    init = lab.stack / "api" / "app" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', init.read_text()))


def test_prober_settings_are_live_before_the_probed_releases(lab):
    # Changing the rate limit changes Traefik's environment: Traefik is recreated (not doubled).
    # Run alone (without test_lab_deploy.py first), this is the first, full deploy.
    res = lab.inv("deploy", *(["--update-only"] if "ip" in STATE else []),
                  extra=UNDER_LOAD)
    assert res.returncode == 0, res.stdout[-4000:]
    STATE["ip"] = lab.manifest()["target"]["ip"]
    # test_lab_deploy.py ends with a rate-limit burst from this machine, the prober's address: the
    # probed releases start once its window has passed (the session waits out each 429).
    session, base = api(lab, STATE["ip"])
    assert session.get(f"{base}/notes", timeout=120).status_code == 200


def test_update_changing_api_django_and_frontend_drops_no_request(lab):
    bump(lab, "1.0.1")
    settings = lab.stack / "django" / "config" / "settings.py"
    settings.write_text(settings.read_text() + "\n# release 1.0.1\n")
    index = lab.stack / "frontend" / "index.html"
    index.write_text(index.read_text().replace("</body>", "<!-- release 1.0.1 --></body>"))
    res, report = probed(lab, "deploy", "--update-only")
    assert res.returncode == 0, res.stdout[-4000:]
    replaced = lab.manifest()["details"]["up"]["replaced"]
    assert {"api", "django", "frontend", "worker", "flower"} <= set(replaced), replaced
    assert_available(report)
    assert live_api_version(lab) == "1.0.1"
    STATE["release_101"] = lab.manifest()["details"]["push"]["release_id"]


def test_rollback_drops_no_request_and_rebuilds_nothing(lab):
    res, report = probed(lab, "rollback")
    assert res.returncode == 0, res.stdout[-4000:]
    steps = [s["name"] for s in lab.manifest()["steps"]]
    assert "build" not in steps
    assert_available(report)
    assert live_api_version(lab) == "1.0.0"
    res, report = probed(lab, "rollback", "--release", STATE["release_101"])   # and forward again by id
    assert res.returncode == 0, res.stdout[-4000:]
    assert_available(report)
    assert live_api_version(lab) == "1.0.1"


def test_an_api_that_never_becomes_healthy_leaves_the_old_one_serving(lab):
    bump(lab, "1.0.2-broken")
    main = lab.stack / "api" / "app" / "main.py"
    good = main.read_text()
    main.write_text(good + "\nraise SystemExit('release 1.0.2 cannot start')\n")
    try:
        res, report = probed(lab, "deploy", "--update-only")
    finally:
        main.write_text(good)
    assert res.returncode == 1
    data = lab.manifest()
    assert "service api" in data["error"] and "still serving release" in data["error"], data["error"]
    assert_available(report)
    assert live_api_version(lab) == "1.0.1"
