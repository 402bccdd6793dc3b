"""The fake API with a RecordingBackend, as the tests of this folder drive it (a module may
define its own ``fake``, e.g. without machines)."""
from __future__ import annotations

import pytest

from lab.fake_do import FakeDigitalOcean
from tests.fake_do.helpers import TOKEN, RecordingBackend


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend(ip="127.0.0.1")


@pytest.fixture
def fake(backend, monkeypatch):
    api = FakeDigitalOcean(TOKEN, backend=backend, operator_ip="198.51.100.7", max_per_page=2)
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", api.start())
    yield api
    api.stop()
