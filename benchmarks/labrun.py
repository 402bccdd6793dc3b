"""Shared plumbing of the lab benchmarks: a lab of its own, a copy of stack/, `inv` runs timed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class LabRun:
    def __init__(self, lab: dict[str, str], **settings: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{lab['LAB_NAME']}-"))
        self.stack = self.tmp / "stack"
        shutil.copytree(REPO / "stack", self.stack,
                        ignore=shutil.ignore_patterns("node_modules", "dist", "__pycache__", ".env"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN", "DOMAIN", "DEPLOY_", "SSH_"))}
        self.env.update(lab, LAB_STATE_DIR=str(self.tmp / "lab"), LOGS_DIR=str(self.tmp / "runs"),
                        STACK_DIR=str(self.stack), SSH_KNOWN_HOSTS=str(self.tmp / "known_hosts"), **settings)
        self.values: dict[str, str] = {}

    def inv(self, *argv: str, env_file: bool = True, ok: bool = True,
            extra: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
        cmd = [sys.executable, "-m", "invoke", *argv] + (["--env-file", str(self.tmp / "lab.env")] if env_file else [])
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=REPO, env={**self.env, **(extra or {})}, capture_output=True, text=True)
        if ok and res.returncode != 0:
            print(res.stdout[-3000:], res.stderr[-2000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"`inv {' '.join(argv)}` failed with exit {res.returncode}")
        return time.monotonic() - t0, res

    def up(self) -> None:
        self.inv("lab.up", env_file=False)
        text = self.inv("lab.env", env_file=False)[1].stdout
        (self.tmp / "lab.env").write_text(text)
        self.values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))

    def last_run(self) -> dict:
        return json.loads((sorted((self.tmp / "runs").iterdir())[-1] / "run.json").read_text())

    def down(self) -> None:
        self.inv("lab.down", env_file=False, ok=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
