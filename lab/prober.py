"""Steady traffic against a deployed stack while something happens to it (a deploy, a rollback),
so availability is measured, not inferred from container health.

Each route gets its own thread sending requests at a fixed rate, pinned to the droplet's IP with
the domain as SNI and Host (as the checks do). Every answer is recorded: any status outside
2xx/3xx, or no answer at all, is a failed request. The prober stops by itself after
``max_seconds`` even if nobody stops it.
"""
from __future__ import annotations

import statistics
import threading
import time
import warnings
from dataclasses import dataclass, field

import requests
from urllib3.exceptions import InsecureRequestWarning

from deploy.checks import PublicSite
from deploy.checks.pinned import pinned_session


@dataclass(frozen=True)
class Route:
    path: str
    per_second: float


@dataclass(frozen=True)
class Probe:
    route: str
    at: float            # seconds since the prober started
    status: int | None   # None: no HTTP answer (connection refused, reset, timeout)
    seconds: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400


@dataclass
class ProbeReport:
    probes: list[Probe] = field(default_factory=list)

    @property
    def failed(self) -> list[Probe]:
        return [p for p in self.probes if not p.ok]

    def latency(self, q: float) -> float:
        values = sorted(p.seconds for p in self.probes if p.ok)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]

    def summary(self) -> dict:
        by_route: dict[str, dict] = {}
        for p in self.probes:
            r = by_route.setdefault(p.route, {"sent": 0, "failed": 0, "statuses": {}})
            r["sent"] += 1
            r["failed"] += 0 if p.ok else 1
            key = str(p.status) if p.status is not None else (p.error or "no answer")
            r["statuses"][key] = r["statuses"].get(key, 0) + 1
        return {"sent": len(self.probes), "failed": len(self.failed),
                "p50_ms": round(self.latency(0.5) * 1000, 1), "p99_ms": round(self.latency(0.99) * 1000, 1),
                "mean_ms": round(statistics.fmean(p.seconds for p in self.probes) * 1000, 1) if self.probes else None,
                "routes": by_route}


class Prober:
    """``with Prober(ip, domain, routes) as p: ...`` then ``p.report``."""

    def __init__(self, ip: str, domain: str, routes: list[Route], timeout: float = 10.0,
                 max_seconds: float = 1800.0) -> None:
        self.target = PublicSite(ip=ip, domain=domain, deploy_env="production")
        self.routes = routes
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.report = ProbeReport()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0

    def __enter__(self) -> "Prober":
        self._t0 = time.monotonic()
        for route in self.routes:
            thread = threading.Thread(target=self._loop, args=(route,), daemon=True, name=f"probe {route.path}")
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> ProbeReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return self.report

    def _loop(self, route: Route) -> None:
        interval = 1.0 / route.per_second
        url = f"https://{self.target.domain}{route.path}"
        # Staging and test-CA certificates are expected: a warning per request would bury the figures.
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        with pinned_session(self.target) as session:
            next_at = time.monotonic()
            while not self._stop.is_set() and time.monotonic() - self._t0 < self.max_seconds:
                started = time.monotonic()
                status, error = None, ""
                try:
                    resp = session.get(url, timeout=self.timeout, verify=False, allow_redirects=False)
                    status = resp.status_code
                except requests.RequestException as exc:
                    error = type(exc).__name__
                probe = Probe(route=route.path, at=round(started - self._t0, 3), status=status,
                              seconds=time.monotonic() - started, error=error)
                with self._lock:
                    self.report.probes.append(probe)
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))


DEFAULT_ROUTES = [Route("/", 20), Route("/api/health", 5), Route("/api/notes", 1)]
