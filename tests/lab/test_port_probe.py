"""`inv lab.up` checks the API port before it starts the API: the check must agree with how the
API binds, or a port the API could take is refused (right after `inv lab.down`, whose closed
connections linger in TIME_WAIT for up to a minute)."""
from __future__ import annotations

import socket

from lab import control
from lab.fake_do.server import FakeDigitalOcean
from lab.ports import free_port


def _leave_time_wait(port: int, connections: int = 3) -> None:
    """Connections to 127.0.0.1:port closed by the server side first, as the API closes them:
    the server's ends stay in TIME_WAIT on `port` after the listener is gone."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        for _ in range(connections):
            client = socket.create_connection(("127.0.0.1", port))
            served, _ = listener.accept()
            served.close()                   # the server closes first: its end goes to TIME_WAIT
            client.recv(1)                   # the client sees the close ...
            client.close()                   # ... and closes too


def _plain_bind_refused(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


def test_a_port_left_in_time_wait_is_free_for_the_api():
    port = free_port()
    _leave_time_wait(port)
    # The situation of the bug: a bind without SO_REUSEADDR is refused ...
    assert _plain_bind_refused(port), "no TIME_WAIT left on the port: the test proves nothing"
    # ... yet the API (http.server binds with SO_REUSEADDR) can listen there, so the check says free.
    assert control._port_free(port)
    fake = FakeDigitalOcean(token="t" * 64)
    try:
        assert fake.start(port=port) == f"http://127.0.0.1:{port}/v2/"
    finally:
        fake.stop()


def test_a_port_someone_listens_on_is_still_in_use():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not control._port_free(listener.getsockname()[1])
