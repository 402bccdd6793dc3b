"""The end of a run as the operator sees it, through the real `inv` command line: a failed row
that names what is missing, and the run folder printed once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def inv(tmp_path: Path, *args: str, env_file: str = "DOMAIN=app.example.test\n") -> subprocess.CompletedProcess:
    (tmp_path / "test.env").write_text(env_file)
    # No DigitalOcean settings may leak in from the machine running the tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN", "DOMAIN", "DEPLOY_", "DROPLET_"))}
    env.update(LOGS_DIR=str(tmp_path / "runs"), COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "invoke", *args, "--env-file", str(tmp_path / "test.env")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def only_run(tmp_path: Path) -> Path:
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    return folder


def table_row(output: str, name: str) -> str:
    rows = [line for line in output.splitlines() if line.startswith("│") and line.strip("│ ").startswith(name + " ")]
    assert len(rows) == 1, f"expected one {name!r} row in:\n{output}"
    return rows[0]


@pytest.mark.parametrize("task, row, code", [("deploy", "token-check", 2), ("verify", "token-check", 4)])
def test_missing_token_is_a_failed_row_naming_it(tmp_path, task, row, code):
    res = inv(tmp_path, task)
    out = res.stdout + res.stderr
    assert res.returncode == code, out
    line = table_row(res.stdout, row)
    assert "FAIL" in line and "DIGITALOCEAN_TOKEN is not set" in line, line
    steps = {s["name"]: s for s in json.loads((only_run(tmp_path) / "run.json").read_text())["steps"]}
    assert steps[row]["status"] == "failed" and "DIGITALOCEAN_TOKEN" in steps[row]["message"]


def test_run_folder_is_printed_once_at_the_end(tmp_path):
    res = inv(tmp_path, "deploy")
    folder = str(only_run(tmp_path))
    out = res.stdout + res.stderr
    assert out.count(folder) == 1, out
    assert res.stdout.rstrip().splitlines()[-1].startswith(f"run folder: {folder}")
    assert res.stderr.strip() == "deploy: config-error (exit 2)"
