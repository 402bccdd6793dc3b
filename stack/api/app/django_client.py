"""FastAPI -> Django over the internal network, authenticated by the shared token."""
from __future__ import annotations

from typing import Any

import httpx


class DjangoUnavailable(RuntimeError):
    pass


class DjangoClient:
    def __init__(self, base_url: str, token: str, timeout: float = 3.0):
        self._client = httpx.AsyncClient(
            base_url=base_url, headers={"X-Internal-Token": token}, timeout=timeout
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DjangoUnavailable(f"Django unreachable: {type(exc).__name__}") from exc

    async def health(self, timeout: float) -> dict[str, Any]:
        resp = await self.request("GET", "/internal/health", timeout=timeout)
        body = resp.json()
        return {"ok": resp.status_code == 200, "version": body.get("django"), "database": body.get("database")}
