"""Live progress of long steps: plain lines per state change when the console is not a terminal
(CI logs), a live display of the service states on a terminal, and never a failed run."""
from __future__ import annotations

import io
import re
import subprocess
import threading
import time

from rich.console import Console

from deploy.redact import SecretRegistry
from deploy.report.run import Run
from remote.connection import SshEndpoint, connector
from remote.layout import ReleaseLayout
from remote.host import Host
from tests.remote.sshd import pin


class Scripted:
    """A poll that answers the given states in turn, then keeps answering the last one."""

    def __init__(self, *answers: dict[str, str]) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> dict[str, str]:
        with self.lock:
            self.calls += 1
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def new_run(tmp_path, console: Console) -> Run:
    return Run(tmp_path, "deploy", "full", ["inv", "deploy"], console=console, registry=SecretRegistry())


def progress_lines(text: str) -> list[str]:
    return re.findall(r"\[up\] \w+: \w+", text)


def test_plain_console_gets_one_line_per_state_change_and_the_last_one_before_the_step_ends(tmp_path):
    out = io.StringIO()
    run = new_run(tmp_path, Console(file=out, width=120))
    poll = Scripted({"api": "created"}, {"api": "starting"}, {"api": "starting"}, {"api": "starting", "worker": "starting"},
                    {"api": "healthy", "worker": "healthy"})
    with run.watching("up", poll, interval=0.01), run.step("up"):
        while poll.calls < 5:          # the watcher polls while the step's command runs
            time.sleep(0.005)
    log = (run.folder / "run.log").read_text()
    assert progress_lines(log) == ["[up] api: created", "[up] api: starting", "[up] worker: starting",
                                   "[up] api: healthy", "[up] worker: healthy"]
    assert progress_lines(out.getvalue()) == progress_lines(log)
    assert log.index("[up] worker: healthy") < log.index("[up] ok in")   # reported before the step's end line


def test_the_final_state_is_reported_even_when_the_step_is_shorter_than_a_poll_interval(tmp_path):
    out = io.StringIO()
    run = new_run(tmp_path, Console(file=out, width=120))
    poll = Scripted({"api": "building"}, {"api": "built"})
    with run.step("build"), run.watching("build", poll, interval=60):
        pass
    assert re.findall(r"\[build\] api: \w+", out.getvalue()) == ["[build] api: building", "[build] api: built"]


def test_a_failing_poll_never_fails_the_step(tmp_path):
    out = io.StringIO()
    run = new_run(tmp_path, Console(file=out, width=120))
    calls = []

    def broken() -> dict[str, str]:
        calls.append(1)
        if len(calls) > 1:
            raise OSError("channel closed")
        return {"api": "starting"}

    with run.step("up") as step, run.watching("up", broken, interval=0.01):
        while len(calls) < 2:
            time.sleep(0.005)
        step.note("every service healthy")
    assert run.steps[-1].status == "ok"
    text = out.getvalue()
    assert "[up] api: starting" in text
    assert text.count("progress unavailable (OSError: channel closed); the step goes on") == 1
    assert len(calls) == 2                      # no more polls after the failure


def test_terminal_console_shows_the_services_live_and_keeps_the_lines_in_run_log(tmp_path):
    out = io.StringIO()
    run = new_run(tmp_path, Console(file=out, force_terminal=True, width=100))
    with run.step("up"):
        run.progress("up", "api", "starting")
        run.progress("up", "worker", "healthy")
        run.progress("up", "worker", "healthy")       # no change: not reported again
    screen = out.getvalue()
    assert "api" in screen and "starting" in screen and "worker" in screen and "healthy" in screen
    assert "\x1b[" in screen                            # drawn with terminal control sequences
    assert "[up] api: starting" not in screen           # not as plain lines: the live display shows them
    log = (run.folder / "run.log").read_text()
    assert progress_lines(log) == ["[up] api: starting", "[up] worker: healthy"]


def test_polls_share_one_real_ssh_connection_with_the_command_they_watch(tmp_path, sshd):
    # Compose runs as one blocking command; the poller sends its reads on other exec channels of
    # the same Fabric connection, at the same time (a real sshd: no Docker needed).
    ssh = SshEndpoint(host="127.0.0.1", user=sshd.user, key_path=sshd.user_key, port=sshd.port,
                    known_hosts_path=pin(sshd, tmp_path / "known_hosts"), connect_timeout=5, retries=1,
                    backoff=0.1)
    target = Host(name="droplet", host="127.0.0.1", layout=ReleaseLayout("/tmp/unused"),
                    connector=connector(ssh)).open()
    marker = tmp_path / "running"
    seen_running: list[bool] = []

    def poll() -> dict[str, str]:
        state = target.run(f"test -e {marker} && echo running || echo waiting", "polling").stdout.strip()
        seen_running.append(state == "running")
        return {"command": state}

    run = new_run(tmp_path / "runs", Console(file=io.StringIO(), width=120))
    try:
        with run.step("up"), run.watching("up", poll, interval=0.05):
            done = target.run(f"touch {marker}; sleep 2; rm {marker}; echo done", "the long command")
    finally:
        target.close()
    assert done.stdout.strip() == "done"
    assert any(seen_running)     # the marker exists only while the long command runs
    log = (run.folder / "run.log").read_text()
    assert "[up] command: running" in log and log.rstrip().splitlines()[-2].endswith("[up] command: waiting")


def _sessions_killed(sshd, target: Host) -> None:
    """Every SSH session of the sshd killed (as the e2e fault does on a droplet: `pkill -KILL -f
    '^sshd: deploy'`), the listener kept; returns once this side has seen the connection close."""
    transport = target.executor.conn.transport
    subprocess.run(["pkill", "-KILL", "-P", str(sshd.proc.pid)], check=True)
    deadline = time.monotonic() + 10
    while transport.is_active():
        assert time.monotonic() < deadline, "the killed session's connection stayed open"
        time.sleep(0.01)


def test_the_command_and_its_polls_reconnect_at_once_after_a_drop_and_none_hangs(tmp_path, sshd):
    """After a drop mid-cutover the main thread goes on (record the outcome, restore the live
    release) while the progress watcher's next poll runs on its own thread: both found the one
    Fabric connection closed and both reconnected through it at the same time. Two SSHClient.connect
    calls on one client replaced each other's transport; a command then opened its channel on a
    transport still authenticating, the server never answered it and paramiko waits an hour for
    that answer (the e2e test_ssh_dropped_mid_cutover hung there for 900 s). Here several threads
    run their next command at the same instant after the drop: each gets its answer."""
    ssh = SshEndpoint(host="127.0.0.1", user=sshd.user, key_path=sshd.user_key, port=sshd.port,
                      known_hosts_path=pin(sshd, tmp_path / "known_hosts"), connect_timeout=5, retries=1,
                      backoff=0.1)
    target = Host(name="droplet", host="127.0.0.1", layout=ReleaseLayout("/tmp/unused"),
                  connector=connector(ssh)).open()
    threads_per_round = 6
    try:
        for attempt in range(3):
            assert target.run("echo up").stdout.strip() == "up"
            _sessions_killed(sshd, target)
            start = threading.Barrier(threads_per_round)
            answers: dict[int, object] = {}

            def command(i: int) -> None:
                start.wait()
                try:
                    answers[i] = target.run(f"echo {i}", "polling").stdout.strip()
                except Exception as exc:  # noqa: BLE001 - recorded, asserted below
                    answers[i] = f"{type(exc).__name__}: {exc}"

            threads = [threading.Thread(target=command, args=(i,), daemon=True) for i in range(threads_per_round)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            hung = sum(t.is_alive() for t in threads)
            assert hung == 0, f"attempt {attempt}: {hung} command(s) still waiting 30 s after the reconnect"
            assert answers == {i: str(i) for i in range(threads_per_round)}, f"attempt {attempt}: {answers}"
        # one live connection afterwards: no half-open transport was left behind by a lost race
        assert target.executor.conn.transport.is_authenticated()
    finally:
        target.close()


def test_a_poll_hanging_past_the_step_end_delays_it_briefly_and_reports_nothing_late(tmp_path, monkeypatch):
    from deploy.report import progress
    monkeypatch.setattr(progress, "STOP_WAIT", 0.2)
    out = io.StringIO()
    run = new_run(tmp_path, Console(file=out, width=120))
    release = threading.Event()
    polls = []

    def hangs_on_the_second_poll() -> dict[str, str]:
        polls.append(1)
        if len(polls) == 2:
            release.wait(5)          # e.g. an SSH channel that stopped answering
            return {"api": "late"}
        return {"api": "starting"}

    started = time.monotonic()
    with run.step("up"), run.watching("up", hangs_on_the_second_poll, interval=0.01):
        while len(polls) < 2:
            time.sleep(0.005)
    assert time.monotonic() - started < 2
    release.set()
    time.sleep(0.1)
    assert run.steps[-1].status == "ok" and "late" not in out.getvalue() and "[up] api: starting" in out.getvalue()
