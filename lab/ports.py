"""Local TCP ports for tests and benchmarks (lab instances, stand-in servers, closed ports)."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago: the caller listens there next, or relies
    on nothing listening there (a refused connection)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server can listen on host:port now. The probe binds as the lab's API binds
    (SO_REUSEADDR, see lab.fake_do.server.ApiHTTPServer): connections of a stopped API that
    linger in TIME_WAIT do not count, a socket listening there does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
