"""The stack's security posture, checked on the real stack running on the local Docker engine:
`docker inspect` of every container, and connections tried from inside the containers' own
network namespaces (issue 12, "The stack"). The database starts from a volume an older
release left (tables owned by the superuser, one note in it): see posture_lab.py.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need

from lab.stackenv import format_env
from remote import commands as cmd
from remote import stack_secrets

from . import posture_lab
from .posture_lab import OLD_NOTE, PostureStack, docker

SERVICES = {"traefik", "frontend", "api", "django", "worker", "beat", "flower", "redis", "postgres"}
ROOT_NAMES = {"", "0", "root", "0:0", "root:root"}

# Which service may hold which secret (by value): each gets only what it uses.
SECRET_HOLDERS = {
    "DJANGO_SECRET_KEY": {"django"},
    "INTERNAL_API_TOKEN": {"api", "django"},
    # PostgreSQL and Redis read theirs from files (.secrets/, remote/stack_secrets.py), not env
    "POSTGRES_PASSWORD": set(),
    "POSTGRES_APP_PASSWORD": {"django", "worker"},
    "REDIS_PASSWORD": {"api", "django", "worker", "beat", "flower"},
    # Traefik reads the dashboards' users from the folder the deployer fills (remote/edge_config.py)
    "FLOWER_BASIC_AUTH": set(),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> PostureStack:
    need(shutil.which("docker") is not None and os.path.exists("/var/run/docker.sock"), "a running Docker engine")
    started = posture_lab.start(tmp_path_factory.mktemp("posture"))
    yield started
    posture_lab.stop(started)


def _env(info: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in info["Config"]["Env"])


def test_every_service_is_running_and_healthy(stack):
    assert set(stack.containers) == SERVICES
    for service in SERVICES:
        state = stack.inspect(service)["State"]
        assert state["Running"] and state["Health"]["Status"] == "healthy", service


def test_every_container_is_hardened(stack):
    for service in SERVICES:
        host = stack.inspect(service)["HostConfig"]
        assert host["SecurityOpt"] == ["no-new-privileges:true"], service
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], service
        assert host["ReadonlyRootfs"] is True, service
        assert 0 < host["Memory"] <= 1024 ** 3, service
        assert 0 < host["PidsLimit"] <= 500, service
        assert host["Privileged"] is False, service
        log = host["LogConfig"]
        assert log["Type"] == "json-file" and log["Config"] == {"max-size": "10m", "max-file": "5"}, service


def test_no_process_runs_as_root(stack):
    for service in SERVICES:
        info = stack.inspect(service)
        assert info["Config"]["User"] not in ROOT_NAMES, service
        # What the kernel says about the container's first process (this test runs on the host).
        status = Path(f"/proc/{info['State']['Pid']}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert "0" not in uids, (service, uids)
    # Traefik binds 80/443 without any capability: the port floor is lowered in its namespace only.
    assert stack.inspect("traefik")["HostConfig"]["Sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "80"}


def test_each_service_gets_only_the_secrets_it_needs(stack):
    envs = {service: _env(stack.inspect(service)) for service in SERVICES}
    for key, holders in SECRET_HOLDERS.items():
        value = stack.env[key]
        having = {s for s, env in envs.items() if any(value in v for v in env.values())}
        assert having == holders, (key, sorted(having))


def test_redis_requires_the_password(stack):
    code = ("import socket, sys\n"
            "def ask(cmd):\n"
            "    s = socket.create_connection(('redis', 6379), 3); s.sendall(cmd); return s.recv(200)\n"
            "print(ask(b'PING\\r\\n')); print(ask(b'AUTH wrong-password\\r\\n'))\n"
            "print(ask(b'AUTH ' + sys.argv[1].encode() + b'\\r\\nPING\\r\\n'))\n"
            "import os, redis\n"
            "print(redis.Redis.from_url(os.environ['REDIS_URL'], decode_responses=True)"
            ".config_get('protected-mode')['protected-mode'])\n")
    res = docker("exec", stack.containers["api"], "python", "-c", code, stack.env["REDIS_PASSWORD"], check=False)
    noauth, wrong, right, protected = res.stdout.splitlines()
    assert "NOAUTH" in noauth and "WRONGPASS" in wrong and "+OK" in right, res.stdout + res.stderr
    assert protected == "yes"


@pytest.mark.parametrize("service", ["traefik", "frontend"])
def test_the_internet_facing_containers_cannot_reach_redis_or_postgres(stack, service):
    internal = f"{stack.project}_internal"
    targets = {name: stack.inspect(name)["NetworkSettings"]["Networks"][internal]["IPAddress"]
               for name in ("redis", "postgres")}
    code = ("import socket, json\n"
            f"targets = {json.dumps({'redis': [targets['redis'], 6379], 'postgres': [targets['postgres'], 5432]})}\n"
            "out = {}\n"
            "for name, (ip, port) in targets.items():\n"
            "    try: socket.getaddrinfo(name, port); out[name + ' name'] = 'resolves'\n"
            "    except OSError: out[name + ' name'] = 'unknown'\n"
            "    try: socket.create_connection((ip, port), 3).close(); out[name + ' ip'] = 'open'\n"
            "    except OSError as e: out[name + ' ip'] = type(e).__name__\n"
            "print(json.dumps(out))\n")
    res = stack.in_netns(service, code)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["redis name"] == out["postgres name"] == "unknown", out
    assert out["redis ip"] != "open" and out["postgres ip"] != "open", out


def test_traefik_api_answers_only_inside_its_own_namespace(stack):
    probe = ("import socket\n"
             "try: socket.create_connection(('traefik', 8080), 3); print('open')\n"
             "except OSError as e: print(type(e).__name__)\n")
    for service in ("api", "django", "flower"):
        res = stack.exec_python(service, probe)
        assert res.stdout.strip() == "ConnectionRefusedError", (service, res.stdout, res.stderr)
    # Inside Traefik's own container (how the collector reads it, without root) it answers,
    # and shows what must stay private: the basic-auth hashes.
    res = subprocess.run(cmd.traefik_api_get(stack.containers["traefik"], "/api/rawdata"), shell=True,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    res.stdout = cmd.http_body(res.stdout)
    raw = json.loads(res.stdout)
    assert raw["middlewares"]["flower-auth@file"]["basicAuth"]["users"]
    assert "traefik-api@file" in raw["routers"]


def _psql_as_app(stack: PostureStack, sql: str) -> str:
    code = ("import os, psycopg, sys\n"
            "with psycopg.connect(host='postgres', dbname=os.environ['POSTGRES_DB'], user=os.environ['POSTGRES_USER'],\n"
            "                     password=os.environ['POSTGRES_PASSWORD'], autocommit=True) as c:\n"
            "    try: print(c.execute(sys.argv[1]).fetchall())\n"
            "    except psycopg.Error as e: print('ERROR', type(e).__name__)\n")
    res = docker("exec", stack.containers["django"], "python", "-c", code, sql, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_django_connects_as_a_non_superuser_app_role(stack):
    app = stack.env["POSTGRES_APP_USER"]
    assert _env(stack.inspect("django"))["POSTGRES_USER"] == app != stack.env["POSTGRES_USER"]
    assert _psql_as_app(stack, "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
                               "FROM pg_roles WHERE rolname = current_user") == f"[('{app}', False, False, False, False, False)]"
    assert _psql_as_app(stack, "CREATE ROLE intruder LOGIN") == "ERROR InsufficientPrivilege"
    assert _psql_as_app(stack, "ALTER ROLE CURRENT_USER SUPERUSER") == "ERROR InsufficientPrivilege"
    assert _psql_as_app(stack, "SELECT pg_read_file('/etc/passwd')") == "ERROR InsufficientPrivilege"


def test_data_from_an_older_release_is_handed_to_the_app_role_and_still_readable(stack):
    app = stack.env["POSTGRES_APP_USER"]
    # Every table the superuser had created now belongs to the app role (migrations can alter them).
    owners = _psql_as_app(stack, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
    assert owners == f"[('{app}',)]"
    assert _psql_as_app(stack, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()") == f"[('{app}',)]"
    # The note written before the upgrade comes back through the API -> Django -> PostgreSQL.
    res = stack.exec_python("api", "import urllib.request, os; req = urllib.request.Request('http://django:8000/internal/notes',"
                                   " headers={'X-Internal-Token': os.environ['INTERNAL_API_TOKEN']});"
                                   " print(urllib.request.urlopen(req, timeout=5).read().decode())")
    assert OLD_NOTE in res.stdout, res.stdout + res.stderr
    # ...and the app role can write (the sequence of the old table came along).
    assert _psql_as_app(stack, "INSERT INTO notes_note (text, created_at) VALUES ('after', now()) RETURNING id").startswith("[(")


def test_production_api_hides_docs_schema_and_versions(stack):
    code = ("import urllib.request, urllib.error, json\n"
            "for path in ('/api/docs', '/api/openapi.json'):\n"
            "    try: urllib.request.urlopen('http://127.0.0.1:8000' + path, timeout=5); print(path, 200)\n"
            "    except urllib.error.HTTPError as e: print(path, e.code)\n"
            "print(urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=5).read().decode())\n")
    res = stack.exec_python("api", code)
    lines = res.stdout.splitlines()
    assert lines[:2] == ["/api/docs 404", "/api/openapi.json 404"], res.stdout + res.stderr
    health = json.loads(lines[2])
    assert health["status"] == "ok" and "versions" not in health
    assert all("version" not in check for check in health["checks"].values()), health


def test_front_end_sends_a_content_security_policy(stack):
    code = ("import urllib.request\n"
            "for path in ('/', '/some/deep/link'):\n"
            "    print(urllib.request.urlopen('http://frontend:8080' + path, timeout=5).headers['Content-Security-Policy'])\n")
    res = stack.exec_python("api", code)
    policies = res.stdout.splitlines()
    assert len(policies) == 2 and policies[0] == policies[1], res.stdout + res.stderr
    assert "default-src 'self'" in policies[0] and "script-src 'self'" in policies[0]
    assert "'unsafe-inline'" not in policies[0] and "'unsafe-eval'" not in policies[0]


# -- last: it rotates the stack's secrets --------------------------------------------------------

_SIGN = ("import os, sys, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup()\n"
         "from django.core import signing\n"
         "if sys.argv[1] == 'dumps': print(signing.dumps({'user': 42}, salt='session'))\n"
         "else:\n"
         "    try: print(signing.loads(sys.argv[2], salt='session'))\n"
         "    except signing.BadSignature: print('BadSignature')\n")


def _superuser_login(stack: PostureStack, password: str) -> subprocess.CompletedProcess:
    """A TCP login as the superuser inside the postgres container (how anything but the local
    socket reaches it)."""
    return docker("exec", "-e", f"PGPASSWORD={password}", stack.containers["postgres"], "psql", "-X", "-At", "-h",
                  "127.0.0.1", "-U", stack.env["POSTGRES_USER"], "-d", stack.env["POSTGRES_DB"], "-c", "SELECT 1",
                  check=False)


def _login(stack: PostureStack, user: str, password: str) -> str:
    """A TCP login from the django container as ``user``: who the session runs as, or the error."""
    code = ("import os, psycopg, sys\n"
            "try:\n"
            "    with psycopg.connect(host='postgres', dbname=os.environ['POSTGRES_DB'], user=sys.argv[1],\n"
            "                         password=sys.argv[2], autocommit=True, connect_timeout=5) as c:\n"
            "        print(c.execute('SELECT current_user').fetchone()[0])\n"
            "except psycopg.OperationalError as e: print('refused' if 'password authentication failed' in str(e) else e)\n")
    res = docker("exec", stack.containers["django"], "python", "-c", code, user, password, check=False)
    return res.stdout.strip() or res.stderr[-500:]


def _redis_auth(stack: PostureStack, *passwords: str) -> list[str]:
    code = ("import socket, sys\n"
            "for p in sys.argv[1:]:\n"
            "    s = socket.create_connection(('redis', 6379), 3); s.sendall(b'AUTH ' + p.encode() + b'\\r\\n')\n"
            "    print('ok' if s.recv(200).startswith(b'+OK') else 'refused')\n")
    res = docker("exec", stack.containers["api"], "python", "-c", code, *passwords, check=False)
    return res.stdout.split()


def _on_the_host(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)


def test_rotated_passwords_are_taken_live_without_restarting_the_servers_and_old_ones_are_refused_after(stack, tmp_path):
    """Issue 22, what `inv deploy` does when the passwords change in .env (deploy/live_secrets.py),
    with its own commands (remote/stack_secrets.py) on the real PostgreSQL and Redis: the new
    passwords are accepted beside the old ones, the clients are recreated with the new ones
    (PostgreSQL and Redis are not), then the old ones are refused; the servers start again with
    the new ones alone; and Django still accepts what the old key signed, through
    DJANGO_SECRET_KEY_FALLBACKS (the deployer fills it: deploy/rotation.py)."""
    old = dict(stack.env)
    app, alternate = old["POSTGRES_APP_USER"], stack_secrets.alternate(old["POSTGRES_APP_USER"])
    servers = {n: stack.containers[n] for n in ("postgres", "redis")}
    signed = docker("exec", stack.containers["django"], "python", "-c", _SIGN, "dumps", check=False).stdout.strip()
    assert signed.count(":") >= 2, signed
    new = {**old, **{k: secrets.token_urlsafe(40) for k in ("POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD",
                                                            "REDIS_PASSWORD", "DJANGO_SECRET_KEY")},
           "DJANGO_SECRET_KEY_FALLBACKS": old["DJANGO_SECRET_KEY"], stack_secrets.LOGIN: alternate}
    live, target = tmp_path / "live", tmp_path / "target"
    posture_lab.write_server_secrets(live, old)
    posture_lab.write_server_secrets(target, new)
    pg = ("label=com.docker.compose.project=" + stack.project, "label=com.docker.compose.service=postgres")
    redis = ("label=com.docker.compose.project=" + stack.project, "label=com.docker.compose.service=redis")

    # the first half: both logins and both Redis passwords work
    for command in (stack_secrets.postgres(pg, str(target / stack_secrets.POSTGRES_FILE), keep_other=True),
                    stack_secrets.redis_add(redis, str(live / stack_secrets.REDIS_FILE),
                                            str(target / stack_secrets.REDIS_FILE))):
        res = _on_the_host(command)
        assert res.returncode == 0, res.stderr
        assert not any(new[k] in res.stdout + res.stderr for k in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"))
    assert _login(stack, app, old["POSTGRES_APP_PASSWORD"]) == app
    assert _login(stack, alternate, new["POSTGRES_APP_PASSWORD"]) == app      # its sessions run as the app role
    assert _superuser_login(stack, new["POSTGRES_PASSWORD"]).stdout.strip() == "1"
    assert _redis_auth(stack, old["REDIS_PASSWORD"], new["REDIS_PASSWORD"]) == ["ok", "ok"]

    # the clients start with the new values; the servers' files are the new release's
    (stack.folder / ".env").write_text(format_env(new))
    posture_lab.write_server_secrets(stack.folder, new)
    stack.env.update(new)
    up = stack.compose("up", "-d", "--wait", "--wait-timeout", "300", timeout=600, check=False)
    ps = stack.compose("ps", "--all", "--format", "json", check=False).stdout
    stack.containers.update({json.loads(l)["Service"]: json.loads(l)["ID"] for l in ps.splitlines() if l.strip()})
    assert up.returncode == 0, up.stderr[-3000:] + stack.compose("logs", "--tail", "30", check=False).stdout[-6000:]
    assert {n: stack.containers[n] for n in servers} == servers, "PostgreSQL and Redis kept running"
    assert _psql_as_app(stack, "SELECT current_user, session_user") == f"[('{app}', '{alternate}')]"

    # the second half: the old ones are refused
    for command in (stack_secrets.postgres(pg, str(target / stack_secrets.POSTGRES_FILE), keep_other=False),
                    stack_secrets.redis_only(redis, str(target / stack_secrets.REDIS_FILE),
                                             str(target / stack_secrets.REDIS_FILE))):
        res = _on_the_host(command)
        assert res.returncode == 0, res.stderr
    assert _login(stack, app, old["POSTGRES_APP_PASSWORD"]) == "refused"
    assert _login(stack, alternate, new["POSTGRES_APP_PASSWORD"]) == app
    refused = _superuser_login(stack, old["POSTGRES_PASSWORD"])
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr
    assert _redis_auth(stack, old["REDIS_PASSWORD"], new["REDIS_PASSWORD"]) == ["refused", "ok"]
    health = stack.inspect("redis")["Config"]["Healthcheck"]["Test"][1]
    assert docker("exec", servers["redis"], "sh", "-c", health, check=False).returncode == 0   # it reads the new one

    # a wrong live password is refused without saying any password
    res = _on_the_host(stack_secrets.redis_add(redis, str(live / stack_secrets.REDIS_FILE),
                                               str(target / stack_secrets.REDIS_FILE)))
    assert res.returncode != 0 and "refused the live password" in res.stderr
    assert old["REDIS_PASSWORD"] not in res.stderr and new["REDIS_PASSWORD"] not in res.stderr

    # started again, they read the new release's files: the new passwords alone
    docker("restart", servers["postgres"], servers["redis"], timeout=120)
    up = stack.compose("up", "-d", "--wait", "--wait-timeout", "180", timeout=300, check=False)
    assert up.returncode == 0, up.stderr[-3000:]
    assert _login(stack, alternate, new["POSTGRES_APP_PASSWORD"]) == app
    assert _login(stack, app, old["POSTGRES_APP_PASSWORD"]) == "refused"
    assert _redis_auth(stack, old["REDIS_PASSWORD"], new["REDIS_PASSWORD"]) == ["refused", "ok"]

    res = docker("exec", stack.containers["django"], "python", "-c", _SIGN, "loads", signed, check=False)
    assert res.stdout.strip() == "{'user': 42}", res.stdout + res.stderr
    # ...and only through the fallback: without it the old signature is refused
    code = _SIGN.replace("django.setup()", "os.environ['DJANGO_SECRET_KEY_FALLBACKS'] = ''; django.setup()")
    res = docker("exec", stack.containers["django"], "python", "-c", code, "loads", signed, check=False)
    assert res.stdout.strip() == "BadSignature", res.stdout + res.stderr
