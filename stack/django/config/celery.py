"""The Celery app shared by the worker, beat and flower services (same image as Django)."""
from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from celery.beat import PersistentScheduler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("stack")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

HEARTBEAT_FILE = Path(os.environ.get("BEAT_HEARTBEAT_FILE", "/tmp/beat.heartbeat"))


class HeartbeatScheduler(PersistentScheduler):
    """Beat answers no pings, so it proves liveness by touching a file on every tick."""

    def tick(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        HEARTBEAT_FILE.touch()
        return super().tick(*args, **kwargs)
