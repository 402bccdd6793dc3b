"""Local TCP ports for tests and benchmarks (lab instances, stand-in servers, closed ports)."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago: the caller listens there next, or relies
    on nothing listening there (a refused connection)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
