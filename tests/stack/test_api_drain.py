"""The api's shutdown takes the connections the kernel queued before it stops listening
(stack/api/app/drain.py, DrainingServer): a proxy that connected a moment before the old
container got SIGTERM has its request served, not reset after it was written (a 502 no retry
covers). Real uvicorn on a real socket; the event loop is held busy for half a second, as a
loaded droplet holds it, so the connections wait in the kernel's queue when the listener closes."""
from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time

import pytest
import uvicorn

from lab.ports import free_port

from .helpers import STACK

sys.path.insert(0, str(STACK / "api"))
from app.drain import DrainingServer  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"


async def ok(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"served"})


@pytest.fixture
def serving():
    """(server, its loop) of a DrainingServer with the api's draining protocol, in a thread."""
    port = free_port()
    config = uvicorn.Config(ok, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            http="app.drain:DrainingH11Protocol")
    server = DrainingServer(config)
    holder: dict = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        loop.run_until_complete(server.serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield server, holder["loop"], port
    server.should_exit = True
    thread.join(timeout=15)


def _queued(loop, port: int, count: int) -> list[socket.socket]:
    """``count`` connections with a request written, while the loop is too busy to accept them."""
    loop.call_soon_threadsafe(time.sleep, 0.5)
    time.sleep(0.05)
    clients = []
    for _ in range(count):
        c = socket.create_connection(("127.0.0.1", port), timeout=5)   # the kernel completes the handshake
        c.sendall(REQUEST)
        clients.append(c)
    return clients


def _answer(client: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := client.recv(4096):
            data += chunk
    except ConnectionResetError:
        return b"reset"
    finally:
        client.close()
    return data or b"closed"


def test_a_plain_close_resets_the_connections_the_kernel_queued(serving):
    """The race itself: closing the listener with connections queued resets them, request written."""
    server, loop, port = serving
    clients = _queued(loop, port, 3)
    loop.call_soon_threadsafe(lambda: [s.close() for s in server.servers])   # what uvicorn's shutdown does first
    assert [_answer(c) for c in clients] == [b"reset"] * 3


def test_the_draining_server_serves_the_connections_the_kernel_queued_then_stops_listening(serving):
    server, loop, port = serving
    clients = _queued(loop, port, 3)
    taken: list[socket.socket] = []
    loop.call_soon_threadsafe(lambda: taken.extend(server.take_backlog_and_stop()))
    time.sleep(0.6)
    assert len(taken) == 3
    asyncio.run_coroutine_threadsafe(server.adopt(taken), loop).result(timeout=5)
    answers = [_answer(c) for c in clients]
    assert all(a.startswith(b"HTTP/1.1 200") and b"served" in a for a in answers), answers
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
