"""FastAPI under /api: health, notes (through Django) and background jobs (Celery)."""
from __future__ import annotations

import asyncio
import logging
import platform
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import fastapi
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from . import __version__, jobs, ratelimit
from .config import is_production, load_settings
from .django_client import DjangoClient, DjangoUnavailable

log = logging.getLogger("api")

# Health is exempt from the per-client limit: Docker's healthcheck and the deployer's
# verifier poll it, and a 429 there would read as an outage. Traefik's outer limit still
# applies to it from outside.
RATE_LIMIT_EXEMPT = {"/api/health"}
HEALTH_TIMEOUT = 1.5


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=500)


class JobIn(BaseModel):
    text: str = Field(default="hello from the demo job", min_length=1, max_length=200)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = load_settings()
    app.state.settings = settings
    app.state.redis = Redis.from_url(
        settings.redis_url, socket_timeout=HEALTH_TIMEOUT, socket_connect_timeout=HEALTH_TIMEOUT
    )
    app.state.django = DjangoClient(settings.django_url, settings.internal_token)
    app.state.celery = jobs.make_celery(settings.redis_url, settings.result_url)
    yield
    await app.state.django.close()
    await app.state.redis.aclose()


# In production the schema and the docs UI are not served (404): they map the whole attack
# surface for anyone. Decided at import, from the same DEPLOY_ENV the settings read.
_PUBLIC_DOCS = not is_production()
app = FastAPI(title="stack api", version=__version__, docs_url="/api/docs" if _PUBLIC_DOCS else None,
              openapi_url="/api/openapi.json" if _PUBLIC_DOCS else None, redoc_url=None, lifespan=lifespan)


def client_ip(request: Request) -> str:
    # Traefik overwrites X-Real-Ip with the peer address (clients cannot forge it through
    # the edge); direct callers are identified by their socket address.
    return request.headers.get("x-real-ip") or (request.client.host if request.client else "unknown")


@app.middleware("http")
async def rate_limit(request: Request, call_next):  # type: ignore[no-untyped-def]
    path = request.url.path
    if not path.startswith("/api") or path in RATE_LIMIT_EXEMPT:
        return await call_next(request)
    settings = request.app.state.settings
    try:
        decision = await ratelimit.hit(request.app.state.redis, client_ip(request),
                                       settings.rate_limit_rpm, time.time())
    except RedisError as exc:
        # Fail open: Redis trouble already shows in /api/health; refusing every request
        # would turn a cache blip into a full outage.
        log.warning("rate limit skipped, Redis unavailable: %s", type(exc).__name__)
        return await call_next(request)
    if not decision.allowed:
        return JSONResponse(
            {"detail": f"rate limit exceeded: {decision.limit} requests per minute; retry in {decision.reset_seconds}s"},
            status_code=429, headers=decision.headers(),
        )
    response = await call_next(request)
    response.headers.update(decision.headers())
    return response


async def _redis_check(redis: Redis) -> dict[str, Any]:
    try:
        info = await asyncio.wait_for(redis.info("server"), HEALTH_TIMEOUT)
        return {"ok": True, "version": info.get("redis_version")}
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        return {"ok": False, "error": type(exc).__name__}


async def _django_check(django: DjangoClient) -> dict[str, Any]:
    try:
        return await django.health(timeout=HEALTH_TIMEOUT)
    except (DjangoUnavailable, ValueError) as exc:
        return {"ok": False, "error": type(exc).__name__}


@app.get("/api/health")
async def health(request: Request) -> JSONResponse:
    redis_status, django_status = await asyncio.gather(
        _redis_check(request.app.state.redis), _django_check(request.app.state.django)
    )
    ok = redis_status["ok"] and django_status["ok"]
    body: dict[str, Any] = {"status": "ok" if ok else "degraded",
                            "checks": {"redis": redis_status, "django": django_status}}
    if request.app.state.settings.production:
        # No software versions in production: they tell an attacker which CVEs to try.
        for check in body["checks"].values():
            check.pop("version", None)
    else:
        body["versions"] = {"api": __version__, "fastapi": fastapi.__version__,
                            "python": platform.python_version()}
    return JSONResponse(body, status_code=200 if ok else 503)


async def _django_json(request: Request, method: str, **kwargs: Any) -> JSONResponse:
    try:
        resp = await request.app.state.django.request(method, "/internal/notes", **kwargs)
    except DjangoUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    if resp.status_code >= 500 or resp.status_code == 403:
        # 403 means the shared token is misconfigured: a server problem, not the caller's.
        raise HTTPException(status_code=502, detail=f"Django answered {resp.status_code}")
    return JSONResponse(resp.json(), status_code=resp.status_code)


@app.get("/api/notes")
async def list_notes(request: Request) -> JSONResponse:
    return await _django_json(request, "GET")


@app.post("/api/notes", status_code=201)
async def create_note(note: NoteIn, request: Request) -> JSONResponse:
    return await _django_json(request, "POST", json=note.model_dump())


def _job_key(job_id: str) -> str:
    return f"job:{job_id}"


@app.post("/api/jobs", status_code=202)
async def start_job(job: JobIn, request: Request) -> dict[str, str]:
    try:
        job_id = await run_in_threadpool(jobs.enqueue_demo, request.app.state.celery, job.text)
        await request.app.state.redis.set(_job_key(job_id), "1", ex=jobs.JOB_TTL_SECONDS)
    except (RedisError, OSError) as exc:
        raise HTTPException(status_code=503, detail=f"queue unavailable: {type(exc).__name__}") from exc
    return {"id": job_id, "state": "PENDING"}


@app.get("/api/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    try:
        uuid.UUID(job_id)
    except ValueError as exc:
        raise HTTPException(status_code=404, detail="no such job") from exc
    # Celery reports unknown ids as PENDING forever; our own record tells them apart.
    if not await request.app.state.redis.exists(_job_key(job_id)):
        raise HTTPException(status_code=404, detail="no such job")
    return await run_in_threadpool(jobs.job_status, request.app.state.celery, job_id)
