"""The day-2 commands on the lab (issue 24): `inv status` fast and telling degraded from healthy,
`inv logs --follow` showing a new request at once, a secret a service prints never shown by
`inv logs`, `inv manage` and `inv exec` passing their exit status on.

Runs on the lab droplet the other e2e modules deploy (after them, conftest.py orders them); run
alone, it makes the deployment first. Each test leaves the stack healthy for the next."""
from __future__ import annotations

import json
import select
import shlex
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.e2e.conftest import QUIET, REPO, STATE
from tests.e2e.test_lab_deploy import api
from tests.e2e.test_lab_faults import as_root

pytestmark = [pytest.mark.lab, pytest.mark.docker]

PROJECT = "stackdeploy"


def argv(lab, task: str, *rest: str) -> list[str]:
    # --env-file before any `--`: what follows `--` is the remote command's
    return [sys.executable, "-m", "invoke", task, "--env-file", str(lab.env_file), *rest]


def day2(lab, task: str, *rest: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`inv TASK ...` with stdin not a terminal (as in CI): no TTY is asked for."""
    res = subprocess.run(argv(lab, task, *rest), cwd=REPO, env=lab.env(QUIET), stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=timeout)
    (lab.tmp / "inv.log").open("a").write(f"$ {task} {' '.join(rest)} -> {res.returncode}\n{res.stdout}\n{res.stderr}\n")
    return res


def status_json(lab) -> tuple[int, dict]:
    res = day2(lab, "status", "--json")
    return res.returncode, json.loads(res.stdout)


def test_status_exits_0_when_healthy_and_its_time_is_recorded(deployed):
    timings = []
    for _ in range(3):              # the best of three: the first pays for cold caches on a shared machine
        t0 = time.monotonic()
        res = day2(deployed, "status")
        timings.append(time.monotonic() - t0)
        assert res.returncode == 0, res.stdout + res.stderr
    # The 2 s target is a figure (figures.log, and the closing note), not an assertion: on a
    # shared CI machine it measures the machine.
    (deployed.tmp / "figures.log").open("a").write(f"inv status: {', '.join(f'{t:.2f}' for t in timings)} s\n")
    assert "stackdeploy: HEALTHY" in res.stdout and "certificate" in res.stdout
    code, data = status_json(deployed)
    assert code == 0 and data["health"] == "healthy" and data["release"]["id"]
    assert {s["name"] for s in data["services"]} >= {"traefik", "api", "django", "worker", "postgres"}


def test_status_exits_1_while_a_service_is_stopped_and_0_once_it_is_back(deployed):
    as_root(deployed, f"docker stop $(docker ps -q --filter label=com.docker.compose.project={PROJECT} --filter label=com.docker.compose.service=worker)")
    try:
        code, data = status_json(deployed)
        assert code == 1 and data["health"] == "degraded"
        assert any(p.startswith("worker: exited") for p in data["problems"]), data["problems"]
    finally:
        as_root(deployed, f"docker start $(docker ps -aq --filter label=com.docker.compose.project={PROJECT} --filter label=com.docker.compose.service=worker --filter status=exited)")
    deadline = time.monotonic() + 120
    while (found := status_json(deployed))[0] != 0:
        assert time.monotonic() < deadline, found[1]["problems"]
        time.sleep(3)


def test_logs_follow_shows_a_request_made_after_it_started(deployed):
    marker = f"day2-{uuid.uuid4().hex}"
    # PYTHONFAULTHANDLER: should it not end after Ctrl-C, SIGABRT prints where each thread waits
    # SIGINT as in a terminal: CI runs this module as a background job of a script, which starts
    # with SIGINT ignored, and inv would inherit that (then no Ctrl-C could end the follow)
    proc = subprocess.Popen(argv(deployed, "logs", "--follow", "-s", "traefik"), cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env=deployed.env(QUIET) | {"PYTHONFAULTHANDLER": "1"}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _line_within(proc, lambda line: " traefik " in line, 60), "no backlog line: not following"
        session, base = api(deployed, STATE["ip"])
        t0 = time.monotonic()
        assert session.get(f"{base}/health?probe={marker}", timeout=15).status_code == 200
        seen = _line_within(proc, lambda line: marker in line, 10)
        elapsed = time.monotonic() - t0
        assert seen, "the request never showed up in the followed log"
        (deployed.tmp / "figures.log").open("a").write(f"logs --follow: a request shown after {elapsed:.2f} s\n")
    finally:
        proc.send_signal(signal.SIGINT)      # Ctrl-C: how a follow ends
        try:
            _, err = proc.communicate(timeout=30)   # read on: a terminal never blocks its writer
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"inv logs --follow did not end within 30 s of Ctrl-C; where it waited:\n{err[-8000:]}")
    assert proc.returncode == 0, err


def _line_within(proc: subprocess.Popen, wanted, seconds: float) -> str | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if wanted(line):
            return line
    return None


def test_a_canary_secret_printed_by_a_service_never_appears_in_inv_logs(deployed):
    secret = deployed.values["REDIS_PASSWORD"]
    marker = f"canary-{uuid.uuid4().hex[:8]}"
    line = shlex.quote(f"{marker} the password is {secret} and the url redis://:{secret}@redis:6379/0")
    # as the service's own user: it may write to its PID 1's stdout (root has no capabilities there)
    as_root(deployed, f"docker exec $(docker ps -q --filter label=com.docker.compose.project={PROJECT} --filter label=com.docker.compose.service=api | head -n 1) sh -c {shlex.quote(f'echo {line} > /proc/1/fd/1')}")
    res = day2(deployed, "logs", "-s", "api", "--since", "5m", "--grep", marker)
    assert res.returncode == 0, res.stderr
    assert marker in res.stdout and "***REDACTED***" in res.stdout
    assert secret not in res.stdout + res.stderr
    folder = deployed.last_run()
    assert not any(secret in p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_manage_showmigrations_works_and_passes_its_exit_status_on(deployed):
    res = day2(deployed, "manage", "--", "showmigrations")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[X]" in res.stdout                               # applied migrations, listed by Django
    res = day2(deployed, "manage", "--", "no_such_command")
    assert res.returncode == 1 and "Unknown command" in res.stdout + res.stderr
    assert deployed.manifest(deployed.last_run())["exit_code"] == 1


def test_exec_in_the_api_works_and_passes_its_exit_status_on(deployed):
    res = day2(deployed, "exec", "api", "--", "python", "-c", "print(1)")
    assert res.returncode == 0 and res.stdout == "1\n", res.stdout + res.stderr
    res = day2(deployed, "exec", "api", "--", "python", "-c", "import sys; sys.exit(3)")
    assert res.returncode == 3
    res = day2(deployed, "exec", "nginx", "--", "true")
    assert res.returncode == 2 and "name one of: " in res.stderr
    assert deployed.manifest(deployed.last_run())["outcome"] == "config-error"
