"""Each stand-in honours the contract of the official image the stack expects."""
from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
import requests

from lab.docker import docker, inspect
from lab.images import builder, recipes

pytestmark = pytest.mark.docker


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def net():
    """A throwaway Docker network and the containers put on it, removed afterwards."""
    name = f"labimg-{uuid.uuid4().hex[:8]}"
    docker("network", "create", "--label", "stackdeploy.labtest=1", name)
    made: list[str] = []
    yield name, made
    for c in made:
        run("rm", "-f", "-v", c)
    run("network", "rm", name)


def start(net, name: str, image: str, *args: str, env: dict | None = None, mounts=()) -> str:
    netname, made = net
    cname = f"{netname}-{name}"
    made.append(cname)
    flags = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
    flags += [a for m in mounts for a in ("-v", m)]
    docker("run", "-d", "--name", cname, "--network", netname, "--network-alias", name, *flags, image, *args)
    return cname


def ip_of(cname: str) -> str:
    nets = inspect("container", cname)["NetworkSettings"]["Networks"]
    return next(iter(nets.values()))["IPAddress"]


def wait_for(fn, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_stand_ins_are_cached_by_recipe(images):
    for tag, recipe in recipes.STANDINS.items():
        labels = inspect("image", tag)["Config"]["Labels"]
        assert labels[recipes.LABEL_RECIPE] == recipe.digest(builder.base_digest())
    before = inspect("image", "redis:7-bookworm")["Id"]
    builder.ensure_standins(["redis:7-bookworm"], log=lambda m: None)
    assert inspect("image", "redis:7-bookworm")["Id"] == before


def test_every_stand_in_trusts_the_host_extra_cas(images):
    host_cas = builder._host_cas()
    assert host_cas, "no extra CA in /usr/local/share/ca-certificates on this machine"
    first_line = host_cas[0].read_text().strip().splitlines()[1]
    for tag in recipes.STANDINS:
        env = inspect("image", tag)["Config"]["Env"]
        for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS"):
            assert f"{var}={recipes.CA_BUNDLE}" in env, (tag, var)
        out = run("run", "--rm", "--entrypoint", "cat", tag, recipes.CA_BUNDLE)
        assert first_line in out.stdout, tag


def test_postgres_honours_env_initdb_and_network_password_auth(images, net, tmp_path):
    initdb = tmp_path / "initdb"
    initdb.mkdir()
    (initdb / "01-seed.sql").write_text("CREATE TABLE seeded (v int); INSERT INTO seeded VALUES (42);")
    initdb.chmod(0o755)
    start(net, "pg", "postgres:15-bookworm", env={"POSTGRES_USER": "appuser", "POSTGRES_PASSWORD": "s3cret",
                                                  "POSTGRES_DB": "appdb"}, mounts=[f"{initdb}:/docker-entrypoint-initdb.d:ro"])
    wait_for(lambda: run("exec", f"{net[0]}-pg", "pg_isready", "-h", "127.0.0.1", "-U", "appuser").returncode == 0,
             90, "pg_isready")
    q = ["run", "--rm", "--network", net[0], "postgres:15-bookworm", "psql"]
    ok = run(*q, "postgresql://appuser:s3cret@pg/appdb", "-tAc", "SELECT v FROM seeded")
    assert ok.returncode == 0 and ok.stdout.strip() == "42", ok.stderr
    bad = run(*q, "postgresql://appuser:wrong@pg/appdb", "-tAc", "SELECT 1")
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr


def test_postgres_without_password_refuses_like_the_official_image(images):
    out = run("run", "--rm", "postgres:15-bookworm")
    assert out.returncode != 0 and "POSTGRES_PASSWORD" in out.stderr


def test_redis_answers_other_containers(images, net):
    start(net, "cache", "redis:7-bookworm", "--appendonly", "yes")
    wait_for(lambda: run("run", "--rm", "--network", net[0], "redis:7-bookworm", "redis-cli", "-h", "cache",
                         "ping").stdout.strip() == "PONG", 30, "redis PONG")
    user = run("exec", f"{net[0]}-cache", "stat", "-c", "%U", "/proc/1")  # PID 1 is redis-server
    assert user.stdout.strip() == "redis"


def test_python_pip_installs_system_wide_through_the_proxy(images):
    out = run("run", "--rm", "python:3.11-slim-bookworm", "sh", "-c",
              "pip install --no-cache-dir --disable-pip-version-check -q six==1.16.0 "
              "&& python -c 'import six, sys; print(six.__version__, sys.version_info[:2])' "
              "&& python -m venv /tmp/v && /tmp/v/bin/python -c 'print(\"venv-ok\")'")
    assert out.returncode == 0, out.stderr
    assert "1.16.0 (3, 11)" in out.stdout and "venv-ok" in out.stdout


def test_node_npm_installs_through_the_proxy(images):
    out = run("run", "--rm", "-w", "/tmp/app", "node:22-bookworm-slim", "sh", "-c",
              "npm init -y >/dev/null && npm install --no-audit --no-fund ms@2.1.3 >/dev/null "
              "&& node -e \"console.log(process.version, require('ms')('2h'))\" && npx --version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("v22.") and " 7200000" in out.stdout


def test_nginx_serves_conf_d_and_logs_to_stdout(images, net, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hello from the lab\n")
    conf = tmp_path / "app.conf"
    conf.write_text("server { listen 8080; location / { root /srv; } }\n")
    site.chmod(0o755)
    cname = start(net, "web", "nginx:stable-bookworm", mounts=[f"{site}:/srv:ro", f"{conf}:/etc/nginx/conf.d/app.conf:ro"])
    ip = ip_of(cname)
    wait_for(lambda: _get(f"http://{ip}/") is not None, 30, "nginx on :80")
    assert "Welcome to nginx" in _get(f"http://{ip}/")
    assert _get(f"http://{ip}:8080/hello.txt") == "hello from the lab\n"
    logs = run("logs", cname)
    assert "GET /hello.txt" in logs.stdout


def _get(url: str) -> str | None:
    try:
        return requests.get(url, timeout=2, proxies={"http": None, "https": None}).text
    except requests.RequestException:
        return None


def test_traefik_reads_etc_traefik_when_run_without_args(images, net, tmp_path):
    assert "3.7." in run("run", "--rm", "traefik:v3.7", "version").stdout
    conf = tmp_path / "traefik.yml"
    conf.write_text(json.dumps({"entryPoints": {"ping": {"address": ":8082"}}, "ping": {"entryPoint": "ping"}}))
    cname = start(net, "edge", "traefik:v3.7", mounts=[f"{conf}:/etc/traefik/traefik.yml:ro"])
    ip = ip_of(cname)
    wait_for(lambda: _get(f"http://{ip}:8082/ping") == "OK", 30, "traefik /ping")
