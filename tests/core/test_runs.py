"""`inv runs` and `inv runs.diff`: reading past run folders."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.report.runs import diff_runs, list_runs, resolve_run

REPO = Path(__file__).resolve().parents[2]


def make_run(root: Path, name: str, outcome: str, traefik_state: str, hsts: str, tls: str) -> Path:
    folder = root / name
    (folder / "remote").mkdir(parents=True)
    (folder / "http").mkdir()
    (folder / "run.json").write_text(json.dumps({
        "run_id": name, "task": "deploy", "mode": "full", "start": "2026-01-01T00:00:00Z", "outcome": outcome,
        "duration_seconds": 12.5, "checks": [{"name": "tls", "status": tls, "observed": {"issuer": "x"}}]}))
    (folder / "remote" / "compose-ps.json").write_text(json.dumps([
        {"service": "traefik", "state": traefik_state, "health": "healthy" if traefik_state == "running" else ""},
        {"service": "api", "state": "running", "health": "healthy"}]))
    (folder / "remote" / "dynamic.yml").write_text("http:\n  routers:\n    api: {}\n")
    (folder / "http" / "headers-root.txt").write_text(f"HTTP/1.1 200 OK\nDate: {name}\nStrict-Transport-Security: {hsts}\n")
    return folder


def test_diff_shows_what_changed_and_ignores_volatile_headers(tmp_path):
    a = make_run(tmp_path, "20260101T000000Z_deploy-full", "success", "running", "max-age=31536000", "pass")
    b = make_run(tmp_path, "20260101T010000Z_deploy-update", "failed", "exited", "max-age=0", "fail")
    out = diff_runs(a, b)
    assert "== remote/dynamic.yml: same" in out
    assert "-traefik: running healthy" in out and "+traefik: exited" in out
    assert "+Strict-Transport-Security: max-age=0" in out
    assert "Date:" not in out
    assert "tls: pass -> fail  (issuer: x)" in out  # the check's line, not its raw data


def test_list_and_resolve(tmp_path):
    a = make_run(tmp_path, "20260101T000000Z_deploy-full", "success", "running", "x", "pass")
    b = make_run(tmp_path, "20260101T010000Z_deploy-update", "partial", "running", "x", "pass")
    (tmp_path / "not-a-run").mkdir()
    assert [r.outcome for r in list_runs(tmp_path)] == ["success", "partial"]
    assert resolve_run(tmp_path, "-1") == b and resolve_run(tmp_path, "20260101T00") == a
    assert resolve_run(tmp_path, "latest") == b and resolve_run(tmp_path, "previous") == a
    with pytest.raises(LookupError, match="inv runs"):
        resolve_run(tmp_path, "1999")


def test_cli_lists_runs_and_reports_unknown_run_clearly(tmp_path):
    make_run(tmp_path, "20260101T000000Z_deploy-full", "success", "running", "x", "pass")
    env = {**os.environ, "LOGS_DIR": str(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "invoke", "runs"], cwd=REPO, env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "20260101T000000Z_deploy-full" in listed.stdout and "success" in listed.stdout
    make_run(tmp_path, "20260101T010000Z_deploy-update", "failed", "exited", "x", "fail")
    diff = subprocess.run([sys.executable, "-m", "invoke", "runs.diff", "previous"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert diff.returncode == 0 and "+traefik: exited" in diff.stdout, diff.stderr
    bad = subprocess.run([sys.executable, "-m", "invoke", "runs.diff", "nope"], cwd=REPO, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "no run folder" in bad.stderr and "Traceback" not in bad.stderr
