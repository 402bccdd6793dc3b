"""Live progress through a whole deploy: the pollers of remote/progress.py read the fake droplet
while compose builds and starts (FakeDocker.slow_start keeps new containers "starting" until a
poll has seen them), and a console that is not a terminal gets one line per state change."""
from __future__ import annotations

import re
import threading

import pytest

from deploy import flows
from deploy.report import progress
from tests.flows.test_flows import ALL_BUILT


@pytest.fixture
def fast_polls(monkeypatch):
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.02)


def changes(log: str, step: str) -> list[tuple[str, str]]:
    return re.findall(rf"\[{step}\] (\w+): (\w+)", log)


def test_each_service_is_reported_once_per_state_during_build_and_up(world, fast_polls):
    world.docker.slow_start = True
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 0, out.message
    log = (out.run.folder / "run.log").read_text()
    services = sorted(world.docker.containers)
    up = changes(log, "up")
    assert sorted(up) == sorted([(s, "starting") for s in services] + [(s, "healthy") for s in services])
    assert all(up.index((s, "starting")) < up.index((s, "healthy")) for s in services)
    during = log[log.index("[up] start"):log.index("[up] ok in")]
    assert all(f"[up] {s}: starting" in during and f"[up] {s}: healthy" in during for s in services)
    build = changes(log, "build")
    assert sorted(build) == sorted((s, state) for s in ALL_BUILT for state in ("building", "built"))
    assert changes(out.message, "up") == up            # the same lines on the console

    main = world.stack / "api" / "app" / "main.py"
    main.write_text(main.read_text() + "\n# v2\n")
    again = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert again.exit_code == 0, again.message
    log = (again.run.folder / "run.log").read_text()
    assert changes(log, "up") == [("api", "starting"), ("api", "healthy")]   # untouched containers say nothing
    assert changes(log, "build") == [("api", "building"), ("api", "built")]


def test_polls_that_fail_never_fail_the_deploy(world, fast_polls):
    world.docker.slow_start = True
    handle = world.docker.handle

    def refused_to_the_poller(argv: list[str], command: str):   # e.g. a second exec channel refused
        if threading.current_thread().name == "progress-watcher":
            world.docker.seen_starting.set()                     # the poll came (up need not wait)
            raise ConnectionResetError("channel refused")
        return handle(argv, command)
    world.docker.handle = refused_to_the_poller
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 0, out.message
    assert out.step("up")["status"] == "ok" and out.step("build")["status"] == "ok"
    unavailable = [line for line in out.message.splitlines() if "[up] progress unavailable" in line]
    assert len(unavailable) == 1 and "channel refused" in unavailable[0] and unavailable[0].endswith("the step goes on")
