"""Fault injection and the request log of the fake API (test-facing, thread-safe)."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

ERROR_IDS = {
    429: ("too_many_requests", "API Rate limit exceeded."),
    500: ("server_error", "Server was unable to give you a response."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "The service is temporarily unavailable."),
    504: ("gateway_timeout", "Gateway timeout."),
}


@dataclass
class Fault:
    """Answer `times` matching requests (-1: every one) with `status` after `delay` s.

    status None means "only slow": wait `delay`, then answer normally.
    process True means "done but the answer was lost": handle the request first, then wait
    `delay` and answer with `status` anyway (what a client sees when a gateway fails after the
    write), or with status None the real answer only after `delay` (a client that gave up
    sooner saw a timeout, though the write happened).
    """
    method: str
    path_regex: str
    status: int | None
    times: int
    delay: float = 0.0
    retry_after: float | None = None
    process: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method.upper())
                and re.search(self.path_regex, path) is not None
                and (self.times < 0 or self.hits < self.times))


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str                   # without the trailing "/" the API ignores
    query: dict[str, list[str]]
    body: Any
    status: int
    authorized: bool
    # The exchange as it went over the wire, for checks against DigitalOcean's published
    # contract. Credentials in `headers` are masked: the log must never hold a token.
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes = b""
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")


def masked_headers(headers: Any) -> dict[str, str]:
    """The request headers with the credential after the auth scheme replaced by ***."""
    out = {}
    for name, value in headers.items():
        if name.lower() == "authorization":
            scheme, _, secret = str(value).partition(" ")
            value = f"{scheme} ***" if secret else "***"
        out[name] = str(value)
    return out


@dataclass
class FaultPlan:
    faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """The first live fault for this request, counted as hit."""
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
