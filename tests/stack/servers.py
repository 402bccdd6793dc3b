"""Small in-process HTTP servers the stack tests put behind Traefik or in front of the API."""
from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

from .helpers import STACK


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers every request with JSON naming the backend and echoing what it received."""

    name = "backend"

    def _answer(self) -> None:
        body = json.dumps({"backend": self.name, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def echo_server(name: str) -> ThreadingHTTPServer:
    handler = type(f"Echo_{name}", (_EchoHandler,), {"name": name})
    return ThreadingHTTPServer(("127.0.0.1", 0), handler)


def nginx_headers() -> dict[str, str]:
    """The headers nginx adds to every page and asset (stack/frontend/security-headers.conf)."""
    text = (STACK / "frontend" / "security-headers.conf").read_text()
    return {name: value for name, value in re.findall(r'^add_header\s+(\S+)\s+"([^"]*)"\s+always;', text, re.M)}


class _SpaHandler(SimpleHTTPRequestHandler):
    """nginx's job in the test: static files with SPA fallback and nginx's headers (so the
    browser enforces the real Content-Security-Policy), /api proxied to the API."""

    api_base = ""

    def end_headers(self) -> None:
        if not self.path.startswith("/api/"):
            for name, value in nginx_headers().items():
                self.send_header(name, value)
        super().end_headers()

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        req = urllib.request.Request(self.api_base + self.path, data=body, method=self.command)
        for key in ("Content-Type", "Accept"):
            if self.headers.get(key):
                req.add_header(key, self.headers[key])
        try:
            resp = urllib.request.urlopen(req, timeout=10)
        except urllib.error.HTTPError as err:
            resp = err
        data = resp.read()
        self.send_response(resp.status)
        for key, value in resp.headers.items():
            if key.lower() not in {"transfer-encoding", "connection", "content-length", "server", "date"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/api/"):
            return self._proxy()
        target = Path(self.translate_path(self.path))
        if not target.exists():
            self.path = "/index.html"
        return super().do_GET()

    def do_POST(self) -> None:
        return self._proxy()

    def log_message(self, *args: object) -> None:
        pass


def spa_server(root: Path, api_base: str) -> ThreadingHTTPServer:
    handler = type("Spa", (_SpaHandler,), {"api_base": api_base.rstrip("/")})
    return ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
