"""The API's Django client against a Django that is being replaced: the old container resets a
connection while it shuts down; an idempotent request tries again and reaches the new one."""
from __future__ import annotations

import asyncio
import socket
import struct
import sys
import threading
import time

import pytest

from .helpers import STACK

sys.path.insert(0, str(STACK / "api"))
from app.django_client import DjangoClient, DjangoUnavailable  # noqa: E402

ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\nConnection: close\r\n\r\n"
          b'{"django": "5.0", "database": "ok", "x":1}')


def serve(resets: int, hang: bool = False) -> tuple[int, list[str]]:
    """A listener whose first ``resets`` connections are reset (or, with ``hang``, never answered),
    as a stopping gunicorn's are; then it answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    seen: list[str] = []

    def loop() -> None:
        with listener:
            while len(seen) < resets + 1:
                conn, _ = listener.accept()
                conn.recv(4096)
                if len(seen) < resets and hang:
                    seen.append("hung")
                    threading.Timer(5, conn.close).start()
                    continue
                if len(seen) < resets:
                    seen.append("reset")
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    seen.append("answered")
                    conn.sendall(ANSWER)
                conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return listener.getsockname()[1], seen


def call(port: int, method: str, timeout: float = 3.0):
    async def go():
        client = DjangoClient(f"http://127.0.0.1:{port}", "token")
        try:
            return await client.request(method, "/internal/health", timeout=timeout)
        finally:
            await client.close()
    return asyncio.run(go())


def test_a_get_survives_a_reset_connection_from_a_stopping_django():
    port, seen = serve(resets=2)
    resp = call(port, "GET")
    assert resp.status_code == 200 and seen == ["reset", "reset", "answered"]


def test_a_post_is_never_repeated():
    port, seen = serve(resets=1)
    with pytest.raises(DjangoUnavailable):
        call(port, "POST")
    assert seen == ["reset"]


def test_a_get_left_unanswered_tries_again_within_the_same_time_budget():
    port, seen = serve(resets=1, hang=True)
    started = time.monotonic()
    resp = call(port, "GET", timeout=1.5)
    assert resp.status_code == 200 and seen == ["hung", "answered"]
    assert time.monotonic() - started < 1.5
