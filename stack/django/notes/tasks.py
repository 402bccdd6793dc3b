"""Celery tasks. Names are explicit because the API enqueues them by name."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from celery import shared_task

from .models import Note


@shared_task(name="jobs.demo")
def demo_job(text: str) -> dict:
    """A short background job that also touches the database, as real jobs would."""
    time.sleep(0.5)
    words = len(text.split())
    return {
        "input": text,
        "upper": text.upper(),
        "words": words,
        "notes_in_db": Note.objects.count(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
    }


@shared_task(name="jobs.heartbeat")
def heartbeat() -> str:
    """Scheduled by beat every minute; visible in Flower as proof the schedule runs."""
    return datetime.now(timezone.utc).isoformat()
