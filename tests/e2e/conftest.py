"""End to end on the local lab: `inv lab.up`, then the real `inv deploy` of the real stack.

One lab (own name, port and subnet, so a developer's lab is left alone) and one full deploy
per session; the tests then build on that deployment in file order.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]
LAB = {"LAB_NAME": "sdtest-e2e", "LAB_API_PORT": "8787", "LAB_SUBNET": "10.78.0.0/24"}
if os.environ.get("E2E_LAB"):   # NAME,PORT,SUBNET: a second e2e lab beside one already running
    LAB = dict(zip(LAB, os.environ["E2E_LAB"].split(",")))
# The burst check would spend the API's per-minute budget that the data tests need; it gets
# its own verify at the end.
QUIET = {"CHECK_RATE_LIMIT": "false", "CHECK_SAMPLES": "3"}
# What the first deploy found (the droplet's address, timings), for the modules that build on it.
STATE: dict = {}
SWARM_LAB = {"LAB_NAME": "sdtest-swarm", "LAB_API_PORT": "8789", "LAB_SUBNET": "10.75.0.0/24"}


@dataclass
class Lab:
    tmp: Path
    env_file: Path
    stack: Path
    logs: Path
    values: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=lambda: dict(LAB))

    def env(self, extra: dict | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN", "DOMAIN", "DEPLOY_", "SSH_"))}
        env.update(self.settings, LAB_STATE_DIR=str(self.tmp / "lab-state"), LOGS_DIR=str(self.logs), STACK_DIR=str(self.stack),
                   SSH_KNOWN_HOSTS=str(self.tmp / "known_hosts"), COLUMNS="120")
        env.update(extra or {})
        return env

    def inv(self, *args: str, extra: dict | None = None, timeout: float = 1800, env_file: bool = True) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "invoke", *args] + (["--env-file", str(self.env_file)] if env_file else [])
        res = subprocess.run(argv, cwd=REPO, env=self.env(extra), capture_output=True, text=True, timeout=timeout)
        (self.tmp / "inv.log").open("a").write(f"$ {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}\n")
        return res

    def last_run(self) -> Path:
        """The run folder that ended last. Names sort by the second a run began; two runs begun in
        the same second (`inv releases` just before a deploy) are told apart by which folder was
        written to last (run.json is its last file): by name alone the releases listing would
        win over the deploy ("releases-list" > "deploy-update"), as it did in CI."""
        return max((p for p in self.logs.iterdir() if p.is_dir()), key=lambda p: (p.name[:16], p.stat().st_mtime_ns))

    def manifest(self, folder: Path | None = None) -> dict:
        return json.loads(((folder or self.last_run()) / "run.json").read_text())


def _labelled(name: str) -> list[str]:
    """Containers of the lab ``name``, running or not."""
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=stackdeploy.lab={name}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def started_lab(tmp_path_factory, settings: dict[str, str]):
    """A lab of its own (name, port, subnet) with a copy of stack/; taken down afterwards."""
    need(shutil.which("docker") is not None and os.path.exists("/var/run/docker.sock"), "a running Docker engine")
    tmp = tmp_path_factory.mktemp(settings["LAB_NAME"])
    stack = tmp / "stack"
    shutil.copytree(REPO / "stack", stack, ignore=shutil.ignore_patterns("node_modules", "dist", "__pycache__", ".env"))
    lab = Lab(tmp=tmp, env_file=tmp / "lab.env", stack=stack, logs=tmp / "runs", settings=dict(settings))
    # A test run killed half way (Ctrl-C, a CI machine stopped) leaves this test lab's droplets,
    # which `inv lab.up` rightly refuses to adopt: they are this suite's own, so they go first.
    # A developer's lab has another name and is never touched.
    if _labelled(settings["LAB_NAME"]):
        down = lab.inv("lab.down", env_file=False, timeout=600)
        assert down.returncode == 0, down.stdout + down.stderr
    up = lab.inv("lab.up", env_file=False, timeout=3600)
    assert up.returncode == 0, up.stdout + up.stderr
    env = lab.inv("lab.env", env_file=False, timeout=120)
    assert env.returncode == 0, env.stderr
    lab.env_file.write_text(env.stdout)
    lab.values = dict(line.split("=", 1) for line in env.stdout.splitlines() if "=" in line and not line.startswith("#"))
    try:
        yield lab
    finally:
        down = lab.inv("lab.down", env_file=False, timeout=600)
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    yield from started_lab(tmp_path_factory, LAB)


# The releases under traffic (the prober counts every failed request) run right after the first
# deploy: in CI that is while only the rest's tests share the 2-core machine; the fault matrix
# follows and meets the swarm's lab building three droplets (scripts/test.sh).
MODULE_ORDER = ("test_lab_deploy.py", "test_zero_downtime.py")


# The disaster recovery replaces the droplet: its module comes after all the others.
LAST = ("test_backups.py",)


def pytest_collection_modifyitems(session, config, items) -> None:
    def rank(item) -> int:
        name = item.path.name
        if name in LAST:
            return len(MODULE_ORDER) + 1
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)
    items.sort(key=rank)   # stable: file order within each module, other modules after


@pytest.fixture(scope="module")
def deployed(lab):
    """The lab with the stack deployed: the first module's deployment, or one made here when a
    module runs alone."""
    if "ip" not in STATE:
        res = lab.inv("deploy", extra=QUIET)
        assert res.returncode == 0, res.stdout[-4000:]
        STATE["ip"] = lab.manifest()["target"]["ip"]
    return lab
