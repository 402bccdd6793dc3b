"""Fixed-window rate limit per client IP, counted in Redis so every worker shares it."""
from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            # Seconds until the window resets (same unit as Retry-After).
            "X-RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_seconds)
        return headers


def decide(count: int, limit: int, now: float) -> Decision:
    """Pure: the verdict for the `count`-th request of the window containing `now`."""
    reset = max(1, math.ceil(WINDOW_SECONDS - (now % WINDOW_SECONDS)))
    return Decision(
        allowed=count <= limit,
        limit=limit,
        remaining=max(0, limit - count),
        reset_seconds=reset,
    )


def window_key(client: str, now: float) -> str:
    return f"ratelimit:api:{client}:{int(now // WINDOW_SECONDS)}"


async def hit(redis: Redis, client: str, limit: int, now: float) -> Decision:
    """Count one request for `client` and return the verdict."""
    key = window_key(client, now)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS + 1)
        count, _ = await pipe.execute()
    return decide(int(count), limit, now)
