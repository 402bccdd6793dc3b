"""Background jobs: enqueue by task name (the API does not import Django's code)."""
from __future__ import annotations

from typing import Any

from celery import Celery
from celery.result import AsyncResult

DEMO_TASK = "jobs.demo"
JOB_TTL_SECONDS = 24 * 3600


def make_celery(broker_url: str, result_url: str) -> Celery:
    app = Celery("api", broker=broker_url, backend=result_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_timeout=3,
        broker_transport_options={"socket_timeout": 3, "socket_connect_timeout": 3},
        redis_socket_timeout=3,
        redis_socket_connect_timeout=3,
    )
    return app


def enqueue_demo(app: Celery, text: str) -> str:
    result = app.send_task(
        DEMO_TASK, args=[text], retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2}
    )
    return result.id


def job_status(app: Celery, job_id: str) -> dict[str, Any]:
    result = AsyncResult(job_id, app=app)
    state = result.state
    body: dict[str, Any] = {"id": job_id, "state": state}
    if state == "SUCCESS":
        body["result"] = result.result
    elif state == "FAILURE":
        # The exception's class only: messages may carry data we don't want to echo.
        body["error"] = type(result.result).__name__
    return body
