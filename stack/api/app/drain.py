"""uvicorn's HTTP protocol, draining on shutdown instead of closing idle connections at once.

When a release stops the old api container, uvicorn closes every connection that has no
request in progress the moment SIGTERM arrives. A proxy that connected (or picked a kept-alive
connection) a moment earlier has then written its request into a closed connection: a 502 that
no proxy may retry, because the request was already sent. Here such a connection stays open for
DRAIN_SECONDS: a request that arrives is served to the end (and the connection then closes);
an idle one is closed when the drain is over. The listening socket is closed first as before,
so new connections are refused and a proxy dials another address before writing anything.

Written against uvicorn 0.54's H11Protocol (requirements.txt pins that minor version).
"""
from __future__ import annotations

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
