"""Session fixtures: private Redis and PostgreSQL, and the real Django/API/worker processes."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from lab.ports import free_port

from tests.conftest import need

from .helpers import PROVIDED_BY, STACK, VENV_BIN, compose, port_open, start, stop, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class Service:
    url: str
    port: int
    log: Path


@pytest.fixture(scope="session")
def workdir():
    # Not under pytest's 0700 tmp root: the postgres user must be able to enter it.
    path = Path(tempfile.mkdtemp(prefix="stack-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(workdir):
    """compose's own redis command (Debian's redis-server is what the lab image runs too):
    requirepass from the deployer's password file via a config file, protected mode on; paths and port adapted.
    Yields the URL with the password, as compose builds it for the clients."""
    proc, url = start_redis(workdir, "redis", free_port(), secrets.token_urlsafe(32))
    yield url
    stop(proc)


def start_redis(workdir: Path, name: str, port: int, password: str) -> tuple[subprocess.Popen, str]:
    """A redis-server as compose's command starts it, in ``workdir/name``; (process, URL)."""
    need(shutil.which("redis-server") is not None, "redis-server (apt: redis-server)", provided_by=PROVIDED_BY)
    home = workdir / name
    home.mkdir(exist_ok=True)
    (script,) = compose()["services"]["redis"]["command"]
    secret = home / "redis-password"
    secret.write_text(password + "\n")
    script = (script.replace("$$", "$")  # compose's escape for a literal $
              .replace("/run/stack-secrets/password", str(secret))
              .replace("/tmp/redis.conf", str(home / "redis.conf")).replace("/data", str(home)))
    log = home / "redis.log"
    proc = start(["sh", "-c", f"{script} --port {port} --bind 127.0.0.1 --save ''"], log, env={})
    wait_until(lambda: port_open(port), 15, name, proc=proc, log=log)
    return proc, f"redis://:{password}@127.0.0.1:{port}"


@dataclass(frozen=True)
class Postgres:
    port: int
    db: str
    user: str
    password: str


@pytest.fixture(scope="session")
def postgres_server(workdir):
    need((PG_BIN / "initdb").exists(), "PostgreSQL 15 (apt: postgresql-15)", provided_by=PROVIDED_BY)
    pg = Postgres(port=free_port(), db="stack", user="stack", password=secrets.token_urlsafe(16))
    root = workdir / "pg"
    root.mkdir()
    pwfile = root / "pw"
    pwfile.write_text(pg.password)
    shutil.chown(root, "postgres", "postgres")
    shutil.chown(pwfile, "postgres", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(as_pg + [str(PG_BIN / "initdb"), "-D", str(root / "data"), "-U", pg.user,
                            f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    log = workdir / "postgres.log"
    proc = start(as_pg + [str(PG_BIN / "postgres"), "-D", str(root / "data"), "-p", str(pg.port),
                          "-k", str(root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"], log)
    ready = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(pg.port)]
    wait_until(lambda: subprocess.run(ready).returncode == 0, 30, "postgres", proc=proc, log=log)
    subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, pg.db],
                   check=True, env={**os.environ, "PGPASSWORD": pg.password}, timeout=30)
    yield pg
    stop(proc, timeout=30)


@pytest.fixture(scope="session")
def stack_env(workdir, redis_server, postgres_server):
    """The environment compose gives the django-image services, pointed at local servers."""
    pg = postgres_server
    return {
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        "DEPLOY_ENV": "staging",
        "DOMAIN": "stack.test",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_DB": pg.db,
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password,
        "REDIS_URL": f"{redis_server}/0",
        "CELERY_RESULT_URL": f"{redis_server}/1",
        "INTERNAL_API_TOKEN": secrets.token_urlsafe(32),
        # the token before the last rotation, as the deployer fills it (deploy/rotation.py)
        "INTERNAL_API_TOKEN_FALLBACKS": secrets.token_urlsafe(32),
        "DJANGO_STATIC_ROOT": str(workdir / "static"),
        "WORKER_HEARTBEAT_FILE": str(workdir / "worker.heartbeat"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _http_ok(url: str) -> bool:
    return requests.get(url, timeout=2).status_code == 200


@pytest.fixture(scope="session")
def django_server(workdir, stack_env):
    """Django through its real image entrypoint (check, migrate, collectstatic, gunicorn)."""
    port = free_port()
    log = workdir / "django.log"
    proc = start([str(STACK / "django" / "entrypoint.sh"), "gunicorn", "config.wsgi:application",
                  "--bind", f"127.0.0.1:{port}", "--workers", "2", "--access-logfile", "-"],
                 log, env=stack_env, cwd=STACK / "django")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _http_ok(f"{url}/internal/health"), 60, "django", proc=proc, log=log)
    yield Service(url, port, log)
    stop(proc)


@pytest.fixture(scope="session")
def worker(workdir, stack_env, django_server):
    """A real Celery worker; ready when the compose healthcheck command passes."""
    node_host = f"stacktest-{secrets.token_hex(4)}"
    env = {**stack_env, "HOSTNAME": node_host}
    log = workdir / "worker.log"
    proc = start(["celery", "-A", "config", "worker", "--loglevel=INFO", "--concurrency=1",
                  f"--hostname=celery@{node_host}"], log, env=env, cwd=STACK / "django")
    wait_until(lambda: worker_healthy(env), 60, "celery worker", proc=proc, log=log)
    yield env
    stop(proc, timeout=20)


def worker_healthy(env: dict) -> bool:
    """compose's healthcheck command for the worker, run here with ``env``."""
    test = compose()["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    argv = [str(VENV_BIN / "python") if test[1] == "python" else test[1], *test[2:]]
    return subprocess.run(argv, env={**os.environ, **env}, cwd=STACK / "django", capture_output=True,
                          timeout=20).returncode == 0


def api_env(stack_env: dict, django_url: str, rpm: int, deploy_env: str = "staging") -> dict:
    return {
        "PATH": stack_env["PATH"],
        "DEPLOY_ENV": deploy_env,
        "REDIS_URL": stack_env["REDIS_URL"],
        "CELERY_RESULT_URL": stack_env["CELERY_RESULT_URL"],
        "DJANGO_INTERNAL_URL": django_url,
        "INTERNAL_API_TOKEN": stack_env["INTERNAL_API_TOKEN"],
        "RATE_LIMIT_API_RPM": str(rpm),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def start_api(workdir: Path, env: dict, name: str, workers: int = 2):
    port = free_port()
    log = workdir / f"{name}.log"
    proc = start([str(VENV_BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(port),
                  "--workers", str(workers)], log, env=env, cwd=STACK / "api")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: port_open(port) and requests.get(f"{url}/api/health", timeout=3).status_code in (200, 503),
               60, name, proc=proc, log=log)
    return proc, Service(url, port, log)


API_RPM = 30


@pytest.fixture(scope="session")
def api_server(workdir, stack_env, django_server, worker):
    # Two uvicorn workers: the rate limit must hold across processes (it lives in Redis).
    proc, service = start_api(workdir, api_env(stack_env, django_server.url, API_RPM), "api")
    yield service
    stop(proc)
