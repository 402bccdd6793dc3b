"""Gunicorn settings for the web container (config/start.py passes this module).

Why a worker stops the listening socket itself: gunicorn's master closes only its own copy of
the listening socket on SIGTERM, and each worker keeps its copy until it exits. Meanwhile the
kernel still accepts connections into the socket's queue that no worker will take, and a
client that reached the old container by DNS (the api, during a start-first replacement)
waits on one until it is reset. Shutting the socket down (shared by every process) refuses new
connections at once, so the client's dial moves to the next address, the new container.
"""
from __future__ import annotations

import signal
import socket
from typing import Any


def post_worker_init(worker: Any) -> None:
    exit_gracefully = signal.getsignal(signal.SIGTERM)   # gunicorn's own: finish the request, then go

    def stop_listening_then_exit(signum: int, frame: Any) -> None:
        exit_gracefully(signum, frame)
        for listener in worker.sockets:
            try:
                listener.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass    # already shut down by another worker

    signal.signal(signal.SIGTERM, stop_listening_then_exit)
