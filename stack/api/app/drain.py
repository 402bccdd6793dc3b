"""uvicorn's HTTP protocol, draining on shutdown instead of closing idle connections at once.

When a release stops the old api container, uvicorn closes every connection that has no
request in progress the moment SIGTERM arrives. A proxy that connected (or picked a kept-alive
connection) a moment earlier has then written its request into a closed connection: a 502 that
no proxy may retry, because the request was already sent. Here such a connection stays open for
DRAIN_SECONDS: a request that arrives is served to the end (and the connection then closes);
an idle one is closed when the drain is over. The listening socket is closed first as before,
so new connections are refused and a proxy dials another address before writing anything;
connections the kernel had already queued are taken first (DrainingServer).

Written against uvicorn 0.54's H11Protocol (requirements.txt pins that minor version).
"""
from __future__ import annotations

import asyncio
import os
import socket

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

DRAIN_SECONDS = 2.0


class DrainingH11Protocol(H11Protocol):
    _draining = False

    def shutdown(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self._draining:
            self._draining = True
            self.loop.call_later(DRAIN_SECONDS, self._drained)
            return
        super().shutdown()

    def _drained(self) -> None:
        if not self.transport.is_closing():
            super().shutdown()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, taking the connections the kernel has queued before it stops listening.

    A proxy's connection whose handshake the kernel completed but the event loop had not yet
    accepted (on a busy 2-core droplet, a few milliseconds' worth) was reset when the listening
    socket closed, after the proxy had written its request: a 502 no retry covers (seen once in a
    rollback under the e2e prober). Here the queue is emptied in the same step that closes the
    listener, and each connection is served like any other accepted before the shutdown.
    """

    def take_backlog_and_stop(self) -> list[socket.socket]:
        """Accepts every connection waiting on the listening sockets, then closes them: synchronous,
        so no connection can join the queue between the last accept and the close."""
        taken: list[socket.socket] = []
        for server in self.servers:
            for listening in server.sockets:
                # A duplicate descriptor, so asyncio's own socket object is left to asyncio.
                twin = socket.socket(fileno=os.dup(listening.fileno()))
                try:
                    twin.setblocking(False)
                    while True:
                        try:
                            conn, _ = twin.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        conn.setblocking(False)
                        taken.append(conn)
                finally:
                    twin.close()
            server.close()
        return taken

    async def adopt(self, connections: list[socket.socket]) -> None:
        """Each connection served by the same protocol as the others (so the shutdown that follows
        drains it like them)."""
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return self.config.http_protocol_class(config=self.config, server_state=self.server_state,
                                                   app_state=self.lifespan.state, _loop=loop)

        await asyncio.gather(*(loop.connect_accepted_socket(protocol, conn) for conn in connections))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.adopt(self.take_backlog_and_stop())
        await super().shutdown(sockets)
