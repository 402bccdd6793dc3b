"""A stand-in for the droplet's edge: HTTPS on one ephemeral port, plain HTTP on another.

Routes by Host header like Traefik does, and records what arrived (Host, SNI) so tests can
prove the checks were pinned to the IP with the domain as name."""
from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.checks.certs import CertFiles

GOOD_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "sameorigin",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
LIMIT_HEADERS = ("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
SPA_PAGE = b"<!doctype html><html><body><div id=root></div></body></html>"
DJANGO_LOGIN = b"<html><title>Log in | Django site admin</title><h1>Django administration</h1>" \
               b"<form id=\"login-form\"></form></html>"


@dataclass
class Behaviour:
    """What the fake edge does; each test changes one thing from the healthy default."""

    headers: dict[str, str] = field(default_factory=lambda: dict(GOOD_HEADERS))
    delay: float = 0.0                       # seconds before answering / and /api/health
    rate_limit: int | None = 3               # /api/notes answers 429 after this many; None: never
    rate_window_hits: int | None = None      # the API's fixed window ends after this many hits (a minute boundary mid-burst)
    rate_limit_headers: tuple[str, ...] = LIMIT_HEADERS
    flower_open: bool = False
    admin_host: str = "auth"                 # "auth": 401, "absent": 404, "django": login redirect
    redirect_http: bool = True
    health_body: bytes = b'{"status": "ok", "database": "ok"}'
    # Go's net/http (Traefik) closes and says "Connection: close" when the client asks; some
    # servers keep the connection open anyway.
    honour_connection_close: bool = True
    # The first request to / and the first to /api/health each wait here for the other (a 503
    # when it does not come): they are answered only if they are asked at the same time.
    meet: threading.Barrier | None = None


@dataclass
class Seen:
    requests: list[tuple[str, str]] = field(default_factory=list)   # (Host, path)
    sni: list[str | None] = field(default_factory=list)
    notes_hits: int = 0
    via: list[tuple[str, int]] = field(default_factory=list)        # HTTPS (path, connection number)
    connections: int = 0
    met: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def setup(self) -> None:
        super().setup()
        seen: Seen = self.server.seen
        with seen.lock:
            seen.connections += 1
            self.connection_number = seen.connections

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if not self.server.behaviour.honour_connection_close:
            self.close_connection = False
        elif self.close_connection:
            self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        behaviour: Behaviour = self.server.behaviour
        seen: Seen = self.server.seen
        host = (self.headers.get("Host") or "").split(":")[0]
        with seen.lock:
            seen.requests.append((host, self.path))
            if self.server.tls:
                seen.via.append((self.path, self.connection_number))
        if not self.server.tls:
            if behaviour.redirect_http:
                return self._send(308, headers={"Location": f"https://{host}:{self.server.https_port}{self.path}"})
            return self._send(200, SPA_PAGE, {"Content-Type": "text/html"})
        if host.startswith("flower."):
            if behaviour.flower_open:
                return self._send(200, b"<html>Flower</html>", {"Content-Type": "text/html"})
            return self._send(401, b"401 Unauthorized", {"WWW-Authenticate": 'Basic realm="flower"'})
        if host.startswith("admin."):
            if behaviour.admin_host == "django":
                return self._send(302, headers={"Location": "/admin/login/?next=/admin/"})
            if behaviour.admin_host == "absent":
                return self._send(404, b"404 page not found")
            return self._send(401, b"401 Unauthorized", {"WWW-Authenticate": 'Basic realm="admin"'})
        headers = dict(behaviour.headers)
        if self.path in ("/", "/api/health"):
            time.sleep(behaviour.delay)
            with seen.lock:
                first = self.path not in seen.met
                seen.met.add(self.path)
            if behaviour.meet is not None and first:
                try:
                    behaviour.meet.wait()
                except threading.BrokenBarrierError:
                    return self._send(503, b"asked alone", headers)
        if self.path == "/api/health":
            return self._send(200, behaviour.health_body, {**headers, "Content-Type": "application/json"})
        if self.path == "/api/notes":
            with seen.lock:
                seen.notes_hits += 1
                hits = seen.notes_hits
            if behaviour.rate_window_hits is not None and hits > behaviour.rate_window_hits:
                hits -= behaviour.rate_window_hits          # counted afresh in the next window
            if behaviour.rate_limit is not None and hits > behaviour.rate_limit:
                limit = {"Retry-After": "60", "X-RateLimit-Limit": str(behaviour.rate_limit),
                         "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "60"}
                limit = {k: v for k, v in limit.items() if k in behaviour.rate_limit_headers}
                return self._send(429, b'{"detail": "rate limited"}', {**headers, **limit})
            return self._send(200, b"[]", {**headers, "Content-Type": "application/json"})
        # Anything else, /admin/ included, is the React app's index (SPA fallback).
        return self._send(200, SPA_PAGE, {**headers, "Content-Type": "text/html"})


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Handshake in the request's own thread, so one slow client cannot stall the listener.
        try:
            wrapped = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(wrapped, client_address, self)
        finally:
            wrapped.close()


class _PlainServer(ThreadingHTTPServer):
    daemon_threads = True


class FakeEdge:
    """HTTPS + HTTP servers on `address`, ephemeral ports. Use as a context manager."""

    def __init__(self, cert: CertFiles, behaviour: Behaviour | None = None, address: str = "127.0.0.1"):
        self.cert = cert
        self.behaviour = behaviour or Behaviour()
        self.seen = Seen()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert.cert, cert.key)
        context.sni_callback = lambda sock, name, ctx: self.seen.sni.append(name)
        self._https = _TLSServer((address, 0), _Handler)
        self._https.ssl_context = context
        self._http = _PlainServer((address, 0), _Handler)
        for server, tls in ((self._https, True), (self._http, False)):
            server.tls, server.behaviour, server.seen = tls, self.behaviour, self.seen
            server.https_port = self.https_port
        self._threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
                         for s in (self._https, self._http)]

    @property
    def https_port(self) -> int:
        return self._https.server_address[1]

    @property
    def http_port(self) -> int:
        return self._http.server_address[1]

    def __enter__(self) -> "FakeEdge":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for server in (self._https, self._http):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)


def health_json(status: str) -> bytes:
    return json.dumps({"status": status}).encode()
