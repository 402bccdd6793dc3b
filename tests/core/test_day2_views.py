"""The pure pieces of the day-2 tasks: the log view (interleaving, colour only on a terminal,
redaction of docker's own lines too), the last deploy found among the run folders without
reading them all, and durations as a person reads them."""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

from deploy.logview import LogView
from deploy.redact import SecretRegistry
from deploy.report.runs import last_run
from deploy.status import duration

SECRET = "s3cret-Value-99"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def view(out: io.StringIO, err: io.StringIO, **kwargs) -> LogView:
    registry = SecretRegistry()
    registry.add_value(SECRET)
    return LogView("stackdeploy", ["api", "worker"], out, err, registry, **kwargs)


def test_held_lines_come_out_in_time_order_and_only_once_held_long_enough():
    out, err = io.StringIO(), io.StringIO()
    v = view(out, err, hold=0.2)
    v.feed("worker-1  | 2026-12-06T13:00:02.000000000Z second")
    v.feed("api-1  | 2026-12-06T13:00:01.000000000Z first")
    v.flush()
    assert out.getvalue() == ""                       # not held long enough yet
    time.sleep(0.25)
    v.flush()
    assert [line.split(" | ")[1] for line in out.getvalue().splitlines()] == ["first", "second"]
    assert out.getvalue().splitlines()[0] == "2026-12-06T13:00:01Z api    | first"
    assert v.shown == 2


def test_colour_only_on_a_terminal_and_docker_errors_go_to_stderr_redacted():
    plain, tty, err = io.StringIO(), Terminal(), io.StringIO()
    for out in (plain, tty):
        v = view(out, err, color=out.isatty())
        v.feed(f"api-1  | 2026-12-06T13:00:01.000000000Z token {SECRET}")
        v.flush(everything=True)
    assert "\x1b[" not in plain.getvalue() and "\x1b[36mapi   \x1b[0m" in tty.getvalue()
    assert SECRET not in plain.getvalue() + tty.getvalue() and "token ***REDACTED***" in plain.getvalue()
    view(plain, err).feed(f"Error response from daemon: {SECRET} is not a container")
    assert err.getvalue() == "Error response from daemon: ***REDACTED*** is not a container\n"


def test_grep_matches_the_redacted_text():
    out = io.StringIO()
    v = view(out, io.StringIO(), grep=re.compile("s3cret|REDACTED"))
    v.feed(f"api-1  | 2026-12-06T13:00:01.000000000Z {SECRET}")
    v.feed("api-1  | 2026-12-06T13:00:02.000000000Z nothing here")
    v.flush(everything=True)
    assert out.getvalue().endswith("| ***REDACTED***\n") and v.shown == 1


def write_run(folder: Path, task: str, mode: str, start: str, outcome: str = "success") -> None:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"task": task, "mode": mode, "start": start, "outcome": outcome}))


def test_the_last_deploy_is_the_newest_deploy_up_or_rollback_plans_left_out(tmp_path):
    write_run(tmp_path / "20261201T100000Z_deploy-full", "deploy", "full", "2026-12-01T10:00:00Z")
    write_run(tmp_path / "20261202T100000Z_rollback-rollback", "rollback", "rollback", "2026-12-02T10:00:00Z", "failed")
    write_run(tmp_path / "20261203T100000Z_deploy-full-plan", "deploy", "full-plan", "2026-12-03T10:00:00Z")
    write_run(tmp_path / "20261204T100000Z_status-status", "status", "status", "2026-12-04T10:00:00Z")
    found = last_run(tmp_path, ("deploy", "up", "rollback"), skip_modes=("-plan",))
    assert (found.task, found.outcome, found.folder.name) == ("rollback", "failed", "20261202T100000Z_rollback-rollback")
    write_run(tmp_path / "latest", "up", "update", "2026-12-05T10:00:00Z")      # --no-timestamp runs count too
    assert last_run(tmp_path, ("deploy", "up", "rollback"), skip_modes=("-plan",)).folder.name == "latest"
    assert last_run(tmp_path / "none", ("deploy",)) is None


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (None, 5, 125, 3 * 3600 + 300, 4 * 86400 + 7200)] == [
        "-", "5 s", "2 min", "3 h 5 min", "4 d 2 h"]
