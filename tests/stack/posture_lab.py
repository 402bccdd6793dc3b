"""The real stack on the local Docker engine, for the posture tests (tests/stack/test_posture.py).

One compose project of its own (name, image tags, volumes), no host ports (other labs share
this engine), DEPLOY_ENV=production. Before `up`, the pg-data volume is filled the way an older
release left it: the schema migrated and a row written as the superuser. Only what this module
created is removed afterwards (by name).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.stackenv import format_env, lab_values, parse_example
from remote import edge_config, stack_secrets

from .helpers import STACK, VENV_BIN

BUILT = ("traefik", "frontend", "api", "django", "postgres")
OLD_NOTE = "written by an older release, as the superuser"


def docker(*args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@dataclass
class PostureStack:
    project: str
    folder: Path
    env: dict[str, str]
    containers: dict[str, str] = field(default_factory=dict)   # service -> container id

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return docker("compose", "-p", self.project, "-f", "compose.yml", "-f", "posture.override.yml", *args,
                      timeout=timeout, check=check, cwd=self.folder)

    def inspect(self, service: str) -> dict:
        return json.loads(docker("inspect", self.containers[service]).stdout)[0]

    def image(self, service: str) -> str:
        return f"{self.project}/stack-{service}:latest"

    def in_netns(self, service: str, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Python run inside ``service``'s network namespace (its own interfaces and DNS), from
        the api image: traefik's and nginx's images have no HTTP client of their own."""
        return docker("run", "--rm", "--network", f"container:{self.containers[service]}", "--cap-drop", "ALL",
                      "--security-opt", "no-new-privileges:true", "--entrypoint", "python", self.image("api"),
                      "-c", code, timeout=timeout, check=False)

    def exec_python(self, service: str, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return docker("exec", self.containers[service], "python", "-c", code, timeout=timeout, check=False)


def _values() -> dict[str, str]:
    example = parse_example((STACK / ".env.example").read_text())
    values = lab_values(example, "posture.test", "127.0.0.1", {}, secrets.token_urlsafe(16))
    values["DEPLOY_ENV"] = "production"
    return values


def _override(project: str) -> str:
    lines = ["services:"]
    for name in BUILT:
        lines += [f"  {name}:", f"    image: {project}/stack-{name}:latest"]
    for name in ("worker", "beat", "flower"):
        lines += [f"  {name}:", f"    image: {project}/stack-django:latest"]
    # No host ports: 80/443 may belong to another lab on this engine. Everything is reached
    # from inside the containers' own networks.
    lines[lines.index("  traefik:") + 1:lines.index("  traefik:") + 1] = ["    ports: !reset []"]
    return "\n".join(lines) + "\n"


def _seed_old_database(project: str, values: dict[str, str]) -> None:
    """The pg-data volume as a release before the app role left it: Django's schema migrated by
    the superuser (POSTGRES_USER), which therefore owns every table, and one note in it."""
    volume = f"{project}_pg-data"
    docker("volume", "create", "--label", f"com.docker.compose.project={project}",
           "--label", "com.docker.compose.volume=pg-data", volume)
    name = f"{project}-oldpg"
    docker("run", "-d", "--name", name, "-v", f"{volume}:/var/lib/postgresql/data",
           "-e", f"POSTGRES_DB={values['POSTGRES_DB']}", "-e", f"POSTGRES_USER={values['POSTGRES_USER']}",
           "-e", f"POSTGRES_PASSWORD={values['POSTGRES_PASSWORD']}", "postgres:15-bookworm")
    try:
        ip = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ip = docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()
            ready = docker("exec", name, "pg_isready", "-q", "-h", "127.0.0.1", check=False)
            if ip and ready.returncode == 0:
                break
            time.sleep(0.5)
        env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
               "DEPLOY_ENV": "production", "DOMAIN": "posture.test", "INTERNAL_API_TOKEN": secrets.token_urlsafe(32),
               "REDIS_URL": "redis://:unused@127.0.0.1:1/0", "CELERY_RESULT_URL": "redis://:unused@127.0.0.1:1/1",
               "POSTGRES_HOST": ip, "POSTGRES_PORT": "5432", "POSTGRES_DB": values["POSTGRES_DB"],
               "POSTGRES_USER": values["POSTGRES_USER"], "POSTGRES_PASSWORD": values["POSTGRES_PASSWORD"],
               "PYTHONDONTWRITEBYTECODE": "1"}
        migrate = subprocess.run([str(VENV_BIN / "python"), "manage.py", "migrate", "--noinput"], cwd=STACK / "django",
                                 env=env, capture_output=True, text=True, timeout=180)
        assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
        insert = docker("exec", "-e", f"PGPASSWORD={values['POSTGRES_PASSWORD']}", name, "psql", "-v", "ON_ERROR_STOP=1",
                        "-h", "127.0.0.1", "-U", values["POSTGRES_USER"], "-d", values["POSTGRES_DB"], "-c",
                        f"INSERT INTO notes_note (text, created_at) VALUES ('{OLD_NOTE}', now())", check=False)
        assert insert.returncode == 0, insert.stdout + insert.stderr
    finally:
        docker("rm", "-f", "-v", name, check=False)


def write_server_secrets(folder: Path, values: dict[str, str]) -> None:
    """What the deployer writes beside a release's .env for PostgreSQL and Redis
    (remote/stack_secrets.py), readable by their containers' own users."""
    for path, content in stack_secrets.files(values).items():
        file = folder / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.parent.chmod(0o755)
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_text(content)
        tmp.chmod(0o444)
        tmp.replace(file)


def start(tmp: Path) -> PostureStack:
    project = f"sdposture{secrets.token_hex(3)}"
    folder = tmp / "stack"
    shutil.copytree(STACK, folder, ignore=shutil.ignore_patterns("node_modules", "dist", "__pycache__", ".env",
                                                                 ".secrets"))
    values = _values()
    base = tmp / "base"                        # the droplet's REMOTE_BASE_DIR, as the deployer lays it out
    values[edge_config.DIR_VAR] = edge_config.folder(str(base))
    (folder / ".env").write_text(format_env(values))
    write_server_secrets(folder, values)
    # Traefik's routes and users go live the deployer's way (deploy/live_secrets.py): its own command.
    subprocess.run(["bash", "-c", edge_config.publish(str(base), str(folder))], check=True, timeout=30)
    (folder / "posture.override.yml").write_text(_override(project))
    stack = PostureStack(project=project, folder=folder, env=values)
    try:
        _seed_old_database(project, values)
        up = stack.compose("up", "-d", "--build", "--wait", "--wait-timeout", "300", timeout=1500, check=False)
        ps = stack.compose("ps", "--all", "--format", "json", check=False).stdout
        for line in ps.splitlines():
            if line.strip():
                row = json.loads(line)
                stack.containers[row["Service"]] = row["ID"]
        if up.returncode != 0:
            logs = stack.compose("logs", "--no-color", "--tail", "40", check=False).stdout
            raise AssertionError(f"compose up failed:\n{up.stderr[-4000:]}\n{logs[-8000:]}")
    except BaseException:
        stop(stack)   # the seeded volume is the project's pg-data: `down -v` removes it too
        raise
    return stack


def stop(stack: PostureStack) -> None:
    """Remove this project's containers, networks and volumes, and the images it built."""
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False)
    for name in BUILT:
        docker("image", "rm", stack.image(name), check=False)
