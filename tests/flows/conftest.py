"""A world for the orchestration tests: real Settings from an env file, a copy of stack/, and the
fake edges of tests/flows/fakes.py. Each flow runs through deploy.taskrun.run_task, as `inv` does."""
from __future__ import annotations

import copy
import functools
import io
import json
import secrets
import shutil
import string
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import yaml
from invoke.exceptions import Exit
from rich.console import Console

from deploy import flows
from deploy.report.run import Run
from deploy.taskrun import PROJECT_ROOT, run_task
from deploy.wiring import Edges
from remote.connection import KeyRefused
from remote.host import Host
from tests.flows.fakes import Fault, FakeChecks, FakeCloud, FakeDocker, FakeDroplet

BCRYPT_CHARS = string.ascii_letters + string.digits + "./"


@functools.lru_cache(maxsize=1)
def _invoke_yaml() -> dict:
    # Parsed once (pure-Python safe_load: ~40 ms a run); each run gets its own copy.
    return yaml.safe_load((PROJECT_ROOT / "invoke.yaml").read_text())


@functools.lru_cache(maxsize=1)
def _session_secrets() -> tuple[tuple[str, str], ...]:
    return tuple(strong_stack_secrets().items())


def strong_stack_secrets() -> dict[str, str]:
    """Values no weak-secret rule refuses: long random strings and bcrypt-shaped hashes."""
    def bcrypt_hash() -> str:
        return "$2y$12$" + "".join(secrets.choice(BCRYPT_CHARS) for _ in range(53))
    return {"POSTGRES_PASSWORD": secrets.token_urlsafe(32), "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
            "POSTGRES_APP_PASSWORD": secrets.token_urlsafe(32), "REDIS_PASSWORD": secrets.token_urlsafe(32),
            "INTERNAL_API_TOKEN": secrets.token_urlsafe(48), "FLOWER_BASIC_AUTH": "admin:" + bcrypt_hash(),
            "ADMIN_BASIC_AUTH": "admin:" + bcrypt_hash()}


@dataclass
class Outcome:
    run: Run
    exit_code: int
    message: str

    @property
    def manifest(self) -> dict:
        return json.loads((self.run.folder / "run.json").read_text())

    @property
    def files(self) -> set[str]:
        return {f["path"] for f in self.manifest["files"]}

    @property
    def step_names(self) -> list[str]:
        return [s["name"] for s in self.manifest["steps"]]

    def step(self, name: str) -> dict:
        return next(s for s in self.manifest["steps"] if s["name"] == name)


@dataclass
class World:
    tmp: Path
    stack: Path
    base: Path
    logs: Path
    env_file: Path
    cloud: FakeCloud = field(default_factory=FakeCloud)
    docker: FakeDocker = field(default_factory=FakeDocker)
    checks: FakeChecks = field(default_factory=FakeChecks)
    droplets: list[FakeDroplet] = field(default_factory=list)
    connector: Callable | None = None   # replaces the fake droplet's connector (e.g. Unreachable())
    cloud_init: list[str] | None = None  # what new fake droplets answer cloud-init's probe with
    fault: Fault | None = None           # called at each connect, command and upload (tests/flows/faults.py)
    disk_full_on: str | None = None      # uploads to paths containing this fail as on a full disk

    @property
    def edges(self) -> Edges:
        def connect(ssh) -> Callable[[bool], FakeDroplet]:
            def open_(quick: bool) -> FakeDroplet:
                if self.fault is not None:
                    self.fault("connect", ssh.host)
                self._authenticate(ssh)
                droplet = FakeDroplet(self.base, self.docker, host=ssh.host, fault=self.fault, home=self.home)
                droplet.disk_full_on = self.disk_full_on
                if self.cloud_init is not None:
                    droplet.cloud_init = list(self.cloud_init)
                self.droplets.append(droplet)
                return droplet
            return open_
        # a fault may wrap the checks in a plain function (tests/flows/faults.py): its certificate is the default
        certificate = getattr(self.checks, "certificate", FakeChecks().certificate)
        return Edges(cloud=self.cloud, connector=self.connector or connect, run_checks=self.checks,
                     certificate=certificate)

    @property
    def home(self) -> Path:
        """The deploy user's home on the fake droplet; its ~/.ssh/authorized_keys, once written,
        decides which keys connect (before that, as right after cloud-init: SSH_KEY_PATH's)."""
        return self.tmp / "droplet" / "home" / "deploy"

    def _authenticate(self, ssh) -> None:
        keys = self.home / ".ssh" / "authorized_keys"
        if not keys.exists():
            return
        blob = Path(f"{ssh.key_path}.pub").read_text().split()[1]
        if not any(blob in line.split() for line in keys.read_text().splitlines()):
            raise KeyRefused(f"the server refused key {ssh.key_path} for user {ssh.user} on {ssh.host}:{ssh.port}",
                             "register the public key on the droplet")

    def set_env(self, **values: str | None) -> None:
        lines = [l for l in self.env_file.read_text().splitlines()
                 if l.split("=", 1)[0] not in values]
        lines += [f"{k}='{v}'" for k, v in values.items() if v is not None]
        self.env_file.write_text("\n".join(lines) + "\n")

    def invoke(self, task: str, flow: Callable[..., Any], mode: str = "full", **kwargs: Any) -> Outcome:
        """Run ``flow`` the way `inv <task>` does: settings, Run, exit code."""
        c = SimpleNamespace(config=copy.deepcopy(_invoke_yaml()))
        out = io.StringIO()
        runs_before = set(self.logs.glob("*")) if self.logs.exists() else set()
        started: list[Run] = []     # this call's Run (several may run at once, in threads)

        def body(run: Run, s: Any) -> Any:
            started.append(run)
            return flow(run, s, edges=self.edges, **kwargs)
        try:
            run = run_task(c, task, mode, {}, str(self.env_file), body, console=Console(file=out, width=200))
            return Outcome(run, 0, out.getvalue())
        except Exit as exc:
            made = set(self.logs.glob("*")) - runs_before
            folder = started[0].folder if started else max(made, default=None)   # None: no folder was made
            run = SimpleNamespace(folder=folder)
            return Outcome(run, exc.code, out.getvalue() + str(exc.message or ""))  # type: ignore[arg-type]

    # -- what is on the droplet -----------------------------------------------------------------
    def current(self) -> str | None:
        link = self.base / "current"
        return Path(link.readlink()).name if link.is_symlink() else None

    def release_meta(self, release_id: str) -> dict:
        return json.loads((self.base / "releases" / release_id / ".release.json").read_text())

    def lock_held(self) -> bool:
        return (self.base / "lock").exists()

    def built(self) -> list[list[str]]:
        """Services named by each `compose build` call (sorted), in order."""
        return [sorted(a for a in argv[argv.index("build") + 1:] if not a.startswith("-"))
                for argv in self.docker.calls if "build" in argv and argv[1] == "compose"]


def _copy_stack(dest: Path) -> Path:
    shutil.copytree(PROJECT_ROOT / "stack", dest,
                    ignore=shutil.ignore_patterns("node_modules", "dist", "__pycache__", ".env"))
    return dest


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def make_world(tmp_path: Path) -> World:
    """A world in ``tmp_path``: an SSH key, a stack copy, an empty droplet and an env file."""
    key = tmp_path / "keys" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("not used: the fake droplet takes no key\n")
    key.with_suffix(".pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFake test\n")
    w = World(tmp=tmp_path, stack=_copy_stack(tmp_path / "stack"), base=tmp_path / "droplet" / "opt" / "app",
              logs=tmp_path / "logs-from-env-file", env_file=tmp_path / "deploy.env")
    w.base.mkdir(parents=True)  # made by cloud-init on a real droplet
    w.env_file.write_text("")
    w.set_env(DIGITALOCEAN_TOKEN="dop_v1_" + "ab12" * 16, DOMAIN="app.example.test", DEPLOY_ENV="production",
              SSH_KEY_PATH=str(key), SSH_KNOWN_HOSTS=str(tmp_path / "known_hosts"),
              REMOTE_BASE_DIR=str(w.base), STACK_DIR=str(w.stack), LOGS_DIR=str(w.logs),
              DASHBOARD_ALLOWLIST="198.51.100.7/32", **dict(_session_secrets()))  # one set: redaction reuses its pattern
    return w


__all__ = ["World", "Outcome", "flows", "Host"]
