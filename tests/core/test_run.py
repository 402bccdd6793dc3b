"""Run folders and run.json: always finished, unique, redacted."""
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console

from core.errors import ConfigError
from deploy.redact import SecretRegistry
from deploy.report.run import Run, new_run_folder

REPO = Path(__file__).resolve().parents[2]


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"))


def test_folders_are_sortable_and_unique_within_one_second(tmp_path):
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    a = new_run_folder(tmp_path, "deploy", "full", True, now)
    b = new_run_folder(tmp_path, "deploy", "full", True, now)
    assert a.name == "20260102T030405Z_deploy-full" and a != b
    assert sorted([b.name, a.name]) == [a.name, b.name]


def test_fixed_folder_is_reused_and_emptied(tmp_path):
    first = new_run_folder(tmp_path, "verify", "verify", False)
    (first / "stale.txt").write_text("old")
    second = new_run_folder(tmp_path, "verify", "verify", False)
    assert first == second == tmp_path / "latest"
    assert not (second / "stale.txt").exists()


def test_manifest_records_steps_outcome_and_files(tmp_path):
    reg = SecretRegistry()
    with Run(tmp_path, "verify", "verify", ["inv", "verify"], console=quiet(), registry=reg) as run:
        with run.step("one") as step:
            step.note("did one")
        run.skip_step("two", "not needed")
        run.artifacts.write_text("a/b.txt", "hello")
    data = json.loads((run.folder / "run.json").read_text())
    assert data["outcome"] == "success" and data["exit_code"] == 0
    assert [(s["name"], s["status"]) for s in data["steps"]] == [("one", "ok"), ("two", "skipped")]
    paths = {f["path"] for f in data["files"]}
    assert {"a/b.txt", "run.log", "summary.md"} <= paths
    assert all(len(f["sha256"]) == 64 for f in data["files"])
    for key in ("run_id", "command", "mode", "start", "end", "duration_seconds", "warnings", "target"):
        assert key in data


def test_run_json_profiles_remote_commands_per_step_longest_first_and_redacted(tmp_path):
    reg = SecretRegistry()
    reg.add_value("s3cr3t-value-123")
    with Run(tmp_path, "deploy", "update", ["inv", "deploy"], console=quiet(), registry=reg) as run:
        timer = run.command_timer("droplet-1")
        with run.step("push"):
            timer("upload", 0.5)
            timer("upload", 1.5)
        with run.step("up"):
            timer("docker compose up", 4.0)
            timer("echo s3cr3t-value-123", 0.1)
        timer("docker ps", 0.2)             # outside any step
    data = json.loads((run.folder / "run.json").read_text())
    rows = [(c["step"], c["host"], c["command"], c["count"], c["seconds"], c["longest"]) for c in data["commands"]]
    assert rows[:2] == [("up", "droplet-1", "docker compose up", 1, 4.0, 4.0),
                        ("push", "droplet-1", "upload", 2, 2.0, 1.5)]
    assert ("-", "droplet-1", "docker ps", 1, 0.2, 0.2) in rows
    assert "s3cr3t-value-123" not in json.dumps(data["commands"])


def test_a_ctrl_c_between_two_steps_still_shows_where_the_run_stopped(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with Run(tmp_path, "deploy", "full", ["inv", "deploy"], console=quiet(), registry=SecretRegistry()) as run:
            with run.step("push"):
                pass
            raise KeyboardInterrupt
    data = json.loads((run.folder / "run.json").read_text())
    assert data["outcome"] == "interrupted"
    assert [(s["name"], s["status"], s["message"]) for s in data["steps"]] == [("push", "ok", ""),
                                                                               ("deploy", "failed", "interrupted")]


def test_a_step_run_beside_another_keeps_the_order_they_began_in_and_its_own_commands(tmp_path):
    import threading
    with Run(tmp_path, "verify", "verify", ["inv", "verify"], console=quiet(), registry=SecretRegistry()) as run:
        timer, release = run.command_timer("droplet-1"), threading.Event()

        def checks():
            with run.step("checks"):
                release.wait(5)
                timer("curl", 0.3)
            return "checked"

        beside = run.beside(checks)
        with run.step("collect"):
            timer("docker ps", 0.1)
            release.set()
            assert beside.result() == "checked"
    data = json.loads((run.folder / "run.json").read_text())
    assert [s["name"] for s in data["steps"]] == ["checks", "collect"]
    assert {(c["step"], c["command"]) for c in data["commands"]} == {("checks", "curl"), ("collect", "docker ps")}


def test_an_interrupt_while_work_runs_beside_waits_for_it_before_the_record_is_written(tmp_path):
    """Ctrl-C reaches the main thread while collect, in its own thread, still reads the droplet:
    the run's record is written once collect has written its files, with collect's step ended."""
    import threading
    release = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with Run(tmp_path, "verify", "verify", ["inv", "verify"], console=quiet(), registry=SecretRegistry()) as run:
            def collect():
                with run.step("collect"):
                    release.wait(5)
                    run.artifacts.write_text("remote/compose-ps.txt", "web running\n")

            run.beside(collect)
            threading.Timer(0.3, release.set).start()
            raise KeyboardInterrupt
    data = json.loads((run.folder / "run.json").read_text())
    assert data["outcome"] == "interrupted"
    assert {s["name"]: s["status"] for s in data["steps"]}["collect"] == "ok"
    assert "remote/compose-ps.txt" in [f["path"] for f in data["files"]] and not list(run.folder.rglob(".*.tmp"))


def test_a_steps_worker_threads_count_their_commands_in_it_while_a_later_step_runs_beside(tmp_path):
    import threading
    from concurrent.futures import ThreadPoolExecutor
    with Run(tmp_path, "verify", "verify", ["inv", "verify"], console=quiet(), registry=SecretRegistry()) as run:
        timer, drift_began, release = run.command_timer("droplet-1"), threading.Event(), threading.Event()

        def collect():
            with run.step("collect"):
                drift_began.wait(5)
                with ThreadPoolExecutor(2, initializer=run.in_this_step()) as pool:
                    pool.submit(timer, "docker compose ps", 0.6).result()
                release.wait(5)

        def drift():
            with run.step("drift"):
                drift_began.set()
                release.wait(5)

        collected = run.beside(collect)
        drifted = run.beside(drift)
        timer("cat", 0.05)
        release.set()
        collected.result(), drifted.result()
    rows = {(c["command"], c["step"]) for c in json.loads((run.folder / "run.json").read_text())["commands"]}
    assert rows == {("docker compose ps", "collect"), ("cat", "drift")}


@pytest.mark.parametrize("exc, outcome, code", [
    (ConfigError("DOMAIN", "is not set", "set it"), "config-error", 2),
    (RuntimeError("boom"), "failed", 1),
    (KeyboardInterrupt(), "interrupted", 130),
])
def test_run_is_finished_on_every_error(tmp_path, exc, outcome, code):
    with pytest.raises(type(exc)):
        with Run(tmp_path, "deploy", "full", ["inv"], console=quiet(), registry=SecretRegistry()) as run:
            raise exc
    data = json.loads((run.folder / "run.json").read_text())
    assert (data["outcome"], data["exit_code"]) == (outcome, code)
    assert "outcome" in (run.folder / "summary.md").read_text()


def test_partial_outcome_when_something_was_skipped(tmp_path):
    with Run(tmp_path, "verify", "verify", ["inv"], console=quiet(), registry=SecretRegistry()) as run:
        run.mark_partial("remote collection", "no droplet IP")
    data = json.loads((run.folder / "run.json").read_text())
    assert data["outcome"] == "partial" and data["exit_code"] == 4
    assert data["skipped"] == [{"what": "remote collection", "why": "no droplet IP"}]


def test_sigterm_still_finishes_the_run(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from deploy.report.run import Run
        with Run(__import__('pathlib').Path({str(tmp_path)!r}), "deploy", "full", ["inv"]) as run:
            print("FOLDER=" + str(run.folder), flush=True)
            with run.step("long"):
                time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    line = ""
    while not line.startswith("FOLDER="):
        line = proc.stdout.readline()
        assert line, "the child ended before opening its run"
    folder = Path(line.strip().split("=", 1)[1])
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) != 0
    data = json.loads((folder / "run.json").read_text())
    assert data["outcome"] == "interrupted" and data["exit_code"] == 143
    assert data["steps"][0]["status"] == "failed"


def test_no_canary_reaches_any_file(tmp_path):
    reg = SecretRegistry()
    canary = "canary-7c1e-SECRETVALUE"
    reg.add_value(canary)
    with pytest.raises(RuntimeError):
        with Run(tmp_path, "deploy", "full", ["inv", f"--token={canary}"], console=quiet(), registry=reg) as run:
            run.log(f"remote said {canary}")
            run.warn(f"env POSTGRES_PASSWORD={canary}")
            run.artifacts.write_text("remote/out.txt", f"output {canary}")
            raise RuntimeError(f"failed with {canary}")
    for path in run.folder.rglob("*"):
        if path.is_file():
            assert canary not in path.read_text(), path


def test_json_artifacts_are_redacted_and_stay_valid(tmp_path):
    reg = SecretRegistry()
    reg.add_value("json-canary-123")
    from deploy.report.artifacts import ArtifactWriter

    w = ArtifactWriter(tmp_path, reg)
    w.write_json("x.json", {"note": 'has "json-canary-123" inside', "db_password": "anything", "ok": True,
                            "nested": [{"token": 5}, "plain"]})
    data = json.loads((tmp_path / "x.json").read_text())
    assert "json-canary-123" not in (tmp_path / "x.json").read_text()
    assert data["db_password"] == "***REDACTED***" and data["ok"] is True
    assert data["nested"] == [{"token": "***REDACTED***"}, "plain"]


def test_adapter_errors_are_operator_errors_and_pass_through_a_step_unchanged(tmp_path):
    from core.errors import OperatorError
    from remote.errors import RemoteError

    raised = RemoteError("SSH key /k refused for deploy@10.0.0.2", "register /k.pub for deploy")
    with pytest.raises(OperatorError) as err:
        with Run(tmp_path, "deploy", "full", ["inv"], console=quiet(), registry=SecretRegistry()) as run:
            with run.step("connect"):
                raise raised
    assert err.value is raised  # no translation: the error keeps its class, hint and exit code
    data = json.loads((run.folder / "run.json").read_text())
    assert data["outcome"] == "failed" and data["exit_code"] == 1
    assert data["error"] == "SSH key /k refused for deploy@10.0.0.2\n  fix: register /k.pub for deploy"
    assert data["steps"][0]["message"].startswith("SSH key /k refused")
    assert not (run.folder / "error-traceback.txt").exists()


@pytest.mark.parametrize("make, exit_code, outcome", [
    (lambda: __import__("deploy.cloud", fromlist=["x"]).TokenMissing("token missing", "set it"), 2, "config-error"),
    (lambda: __import__("deploy.cloud", fromlist=["x"]).TokenRejected("401", "new token"), 3, "config-error"),
    (lambda: __import__("deploy.checks", fromlist=["x"]).ChecksConfigError("CHECK_X bad"), 2, "config-error"),
    (lambda: __import__("deploy.cloud", fromlist=["x"]).CloudUnavailable("API down", "retry"), 1, "failed"),
])
def test_each_adapter_error_sets_its_own_exit_code(tmp_path, make, exit_code, outcome):
    error = make()
    with pytest.raises(type(error)) as raised:
        with Run(tmp_path, "deploy", "full", ["inv"], console=quiet(), registry=SecretRegistry()) as run:
            with run.step("token-check"):
                raise error
    assert raised.value is error                  # the adapter's own error reaches the task, unwrapped
    assert (run.exit_code, run.outcome) == (exit_code, outcome)


def test_a_settings_error_keeps_its_fix_hint_readable_in_every_output(tmp_path):
    # The env-file parse error's hint names keys as words (KEY=value): key-based masking used to
    # turn it into "write it as KEY=***REDACTED***" on the console, in run.log and in run.json.
    from deploy.settings import load_settings

    reg = SecretRegistry()
    reg.add_value("canary-9Qx-beside-the-hint")
    env = tmp_path / "bad.env"
    env.write_text("DOMAIN=ok.example.com\nthis is not valid 'secret-ish-content\n")
    hint = 'write it as KEY=value, KEY="quoted value" or export KEY=value; comments start with #'
    out = io.StringIO()
    with pytest.raises(ConfigError):
        with Run(tmp_path / "runs", "verify", "verify", ["inv", "verify"],
                 console=Console(file=out, width=300), registry=reg) as run:
            run.log("DB_PASSWORD=canary-9Qx-beside-the-hint and API_TOKEN=plain words")
            with run.step("settings"):
                load_settings({}, env_file=env, environ={}, registry=reg, base_dir=tmp_path)
    data = json.loads((run.folder / "run.json").read_text())
    assert hint in data["error"] and hint in data["steps"][0]["message"]
    for text in ((run.folder / "run.log").read_text(), (run.folder / "summary.md").read_text(), out.getvalue()):
        assert hint in text
        assert "canary-9Qx" not in text and "plain words" not in text and "secret-ish-content" not in text


@pytest.mark.parametrize("exc, row", [
    (ConfigError("DOMAIN", "is not set", "set it"), "settings"),
    (RuntimeError("the droplet vanished"), "deploy"),
])
def test_an_error_between_steps_still_gets_a_failed_row(tmp_path, exc, row):
    with pytest.raises(type(exc)):
        with Run(tmp_path, "deploy", "full", ["inv"], console=quiet(), registry=SecretRegistry()) as run:
            with run.step("settings"):
                pass
            raise exc
    steps = json.loads((run.folder / "run.json").read_text())["steps"]
    failed = [s for s in steps if s["status"] == "failed"]
    assert [s["name"] for s in failed] == [row] and str(exc).split("\n")[0] in failed[0]["message"]
    assert len(steps) == (1 if row == "settings" else 2)  # a missing setting fails the settings row itself


def test_run_json_inventory_matches_the_files_as_left(tmp_path):
    import hashlib

    with Run(tmp_path, "verify", "verify", ["inv"], console=quiet(), registry=SecretRegistry()) as run:
        with run.step("one"):
            pass
    files = json.loads((run.folder / "run.json").read_text())["files"]
    assert "run.log" in {f["path"] for f in files}
    for f in files:  # run.log included: the console summary is appended before the inventory is taken
        assert hashlib.sha256((run.folder / f["path"]).read_bytes()).hexdigest() == f["sha256"], f["path"]


def test_a_quiet_run_shows_only_its_warnings_its_error_and_a_failed_runs_folder(tmp_path):
    """logs, exec and status print their own output: the Run must not wrap it in step lines and a
    table, yet run.log keeps everything and a failure still names its fix and its folder."""
    def quiet_run(body) -> tuple[Run, str]:
        out = io.StringIO()
        run = Run(tmp_path, "status", "status", ["inv", "status"], console=Console(file=out, width=200),
                  registry=SecretRegistry(), quiet=True)
        try:
            with run:
                with run.step("discover") as step:
                    step.note("found it")
                body(run)
        except ConfigError:
            pass
        return run, out.getvalue()

    run, shown = quiet_run(lambda run: run.warn("node 2 cannot be reached"))
    assert "node 2 cannot be reached" in shown
    assert "[discover]" not in shown and "run folder" not in shown and "outcome" not in shown
    log = (run.folder / "run.log").read_text()
    assert "[discover] ok" in log and "outcome: success" in log

    def fail(run: Run) -> None:
        raise ConfigError("SERVICE", "names no service of the stack", "pick one of: api, django")
    run, shown = quiet_run(fail)
    assert "pick one of: api, django" in shown and f"run folder: {run.folder}" in shown
    assert "[discover]" not in shown
    assert json.loads((run.folder / "run.json").read_text())["exit_code"] == 2
