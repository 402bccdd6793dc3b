"""The Celery app shared by the worker, beat and flower services (same image as Django)."""
from __future__ import annotations

import os
from pathlib import Path

from celery import Celery, bootsteps
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


WORKER_HEARTBEAT_FILE = Path(os.environ.get("WORKER_HEARTBEAT_FILE", "/tmp/worker.heartbeat"))
WORKER_HEARTBEAT_SECONDS = 2.0


class ConsumerHeartbeat(bootsteps.StartStopStep):
    """The worker's healthcheck reads this file: touched every 2 s by the consumer's event loop
    while it consumes, removed when the consumer stops. Celery stops the consumer's steps when the
    broker connection is lost (and starts them again on reconnect), so a fresh file means a
    connected worker whose loop runs. `celery inspect ping` proved the same at the cost of a
    Celery start per check (seconds on a busy droplet, and a full 3 s timeout while the worker
    starts); reading a file takes milliseconds, so a new worker is seen ready as soon as it is."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(parent, **kwargs)
        self.tref = None

    def start(self, parent):  # type: ignore[no-untyped-def]
        WORKER_HEARTBEAT_FILE.touch()
        self.tref = parent.timer.call_repeatedly(WORKER_HEARTBEAT_SECONDS, WORKER_HEARTBEAT_FILE.touch, priority=10)

    def stop(self, parent):  # type: ignore[no-untyped-def]
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        WORKER_HEARTBEAT_FILE.unlink(missing_ok=True)

    shutdown = stop


app.steps["consumer"].add(ConsumerHeartbeat)
