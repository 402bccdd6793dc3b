"""FastAPI -> Django over the internal network, authenticated by the shared token."""
from __future__ import annotations

import asyncio
from typing import Any

import httpx

# A Django container being replaced (start-first deploys) stops while it is still in DNS: a
# connection to it can be refused, reset, or left unanswered in a closing listener's queue.
# Another attempt dials again and reaches the new one. Only idempotent requests are repeated,
# and the attempts share the request's time budget, so a hung Django is still reported as fast.
RETRIED_ERRORS = (httpx.TransportError,)
ATTEMPTS = 3


class DjangoUnavailable(RuntimeError):
    pass


class DjangoClient:
    def __init__(self, base_url: str, token: str, timeout: float = 3.0):
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=base_url, headers={"X-Internal-Token": token}, timeout=timeout
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        budget = self._timeout if timeout is None else timeout
        attempts = ATTEMPTS if method.upper() in ("GET", "HEAD") else 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._client.request(method, path, timeout=budget / attempts, **kwargs)
            except RETRIED_ERRORS as exc:
                if attempt == attempts:
                    raise DjangoUnavailable(f"Django unreachable: {type(exc).__name__}") from exc
                await asyncio.sleep(0.05)
            except httpx.HTTPError as exc:
                raise DjangoUnavailable(f"Django unreachable: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    async def health(self, timeout: float) -> dict[str, Any]:
        resp = await self.request("GET", "/internal/health", timeout=timeout)
        body = resp.json()
        return {"ok": resp.status_code == 200, "version": body.get("django"), "database": body.get("database")}
