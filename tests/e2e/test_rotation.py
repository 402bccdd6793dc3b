"""Secrets rotated by editing .env and deploying (issue 22), on the lab, under the prober (the
routes and rates of test_zero_downtime.py): DJANGO_SECRET_KEY alone, POSTGRES_PASSWORD,
POSTGRES_APP_PASSWORD and REDIS_PASSWORD one at a time, then all four in one deploy. Each
deploy must go live with the new values; each old password is refused afterwards; an admin
signed in before the key's rotation is still signed in after it, and what Django signed with
the old key still loads (DJANGO_SECRET_KEY_FALLBACKS). Failed requests are
figures (.test-logs/rotation-figures.json), and none may fail: the key is a start-first
replacement of django; the passwords are taken by the running PostgreSQL and Redis beside the
old ones before the clients are replaced, and the old ones retired after (deploy/live_secrets.py).

Runs after test_zero_downtime.py on the same lab droplet; its values replace the lab's in
lab.env, and the rotated-out ones join the canary of test_backups.py."""
from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import requests

from deploy.checks.model import PublicSite
from deploy.checks.pinned import pinned_session
from tests.e2e.conftest import QUIET, REPO, STATE
from tests.e2e.test_lab_deploy import _notes
from tests.remote.sshd import keygen
from tests.e2e.test_zero_downtime import UNDER_LOAD, assert_available, probed

pytestmark = [pytest.mark.lab, pytest.mark.docker]

FIGURES = REPO / ".test-logs" / "rotation-figures.json"
PROJECT = "stackdeploy"
SIGN = ("import os, sys, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup()\n"
        "from django.core import signing\n"
        "print(signing.dumps('still signed in', salt='e2e') if sys.argv[1] == 'dumps' else "
        "signing.loads(sys.argv[2], salt='e2e'))\n")


def in_service(lab, service: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``argv`` in the service's running container on the droplet (as the deploy user, over SSH)."""
    flags = " ".join(f"-e {shlex.quote(k)}={shlex.quote(v)}" for k, v in (env or {}).items())
    find = (f"$(docker ps -q --filter label=com.docker.compose.project={PROJECT} "
            f"--filter label=com.docker.compose.service={service} | head -n 1)")
    key = lab.values["SSH_KEY_PATH"]
    return subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "BatchMode=yes", f"deploy@{STATE['ip']}",
                           f"docker exec {flags} {find} {shlex.join(argv)}"], capture_output=True, text=True, timeout=120)


def superuser_login(lab, password: str) -> subprocess.CompletedProcess:
    return in_service(lab, "postgres", ["psql", "-X", "-At", "-h", "127.0.0.1", "-U", lab.values["POSTGRES_USER"],
                                        "-d", lab.values["POSTGRES_DB"], "-c", "SELECT 1"], env={"PGPASSWORD": password})


def rotate(lab, **new: str) -> dict[str, str]:
    """The new values into the env file the deploys read; the old ones returned."""
    old = {k: lab.values[k] for k in new}
    lines = [l for l in lab.env_file.read_text().splitlines() if l.split("=", 1)[0] not in new]
    lab.env_file.write_text("\n".join(lines + [f"{k}={v}" for k, v in new.items()]) + "\n")
    lab.values.update(new)
    STATE.setdefault("rotated_out", []).extend(old.values())
    return old


def record(**figures) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    old = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps({**old, **figures}, indent=2) + "\n")
    print(json.dumps(figures))


@pytest.fixture(scope="module")
def live(deployed):
    # The prober's rate limit first, so no probed deploy recreates Traefik for it.
    res = deployed.inv("deploy", "--update-only", extra=UNDER_LOAD)
    assert res.returncode == 0, res.stdout[-4000:]
    return deployed


def admin_session(lab):
    """A signed-in Django admin session on admin.<domain>, through Traefik's basic auth, as a
    browser has it: the session cookie of a real login (a new superuser's)."""
    user, password = "e2e-admin", secrets.token_urlsafe(18)
    made = in_service(lab, "django", ["python", "manage.py", "createsuperuser", "--noinput", "--username", user,
                                      "--email", "e2e@example.test"], env={"DJANGO_SUPERUSER_PASSWORD": password})
    assert made.returncode == 0, made.stdout + made.stderr
    session = pinned_session(PublicSite(ip=STATE["ip"], domain=lab.values["DOMAIN"], deploy_env="staging"))
    session.auth = ("admin", (lab.tmp / "lab-state" / "dashboard-password").read_text().strip())
    base = f"https://admin.{lab.values['DOMAIN']}/admin"
    form = session.get(f"{base}/login/", timeout=15)
    assert form.status_code == 200, form.status_code
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    signed_in = session.post(f"{base}/login/?next=/admin/", timeout=15, allow_redirects=False,
                             data={"username": user, "password": password, "csrfmiddlewaretoken": csrf,
                                   "next": "/admin/"}, headers={"Referer": f"{base}/login/"})
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/admin/", signed_in.status_code
    return session, base


def signed_in(session, base: str) -> bool:
    page = session.get(f"{base}/", timeout=15, allow_redirects=False)
    return page.status_code == 200 and "Site administration" in page.text


def test_a_rotated_django_key_drops_no_request_and_a_signed_in_admin_stays_signed_in(live):
    lab = live
    session, base = admin_session(lab)
    assert signed_in(session, base)
    signed = in_service(lab, "django", ["python", "-c", SIGN, "dumps"])
    assert signed.returncode == 0, signed.stderr
    rotate(lab, DJANGO_SECRET_KEY=secrets.token_urlsafe(48))
    res, report = probed(lab, "deploy", "--update-only")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    data = lab.manifest()
    assert data["details"]["secrets_rotated"] == ["DJANGO_SECRET_KEY"]
    assert data["details"]["up"]["replaced"] == ["django"], data["details"]["up"]
    record(django_key={"failed": len(report.failed), **report.summary()})
    assert signed_in(session, base), "the admin signed in before the rotation was sent to the login page"
    loaded = in_service(lab, "django", ["python", "-c", SIGN, "loads", signed.stdout.strip()])
    assert loaded.stdout.strip() == "still signed in", loaded.stdout + loaded.stderr
    assert_available(report)


def app_login(lab) -> str:
    """The database login django uses now (the app role or its alternate)."""
    res = in_service(lab, "django", ["python", "-c", "import os; print(os.environ['POSTGRES_USER'])"])
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def psql_as(lab, user: str, password: str) -> subprocess.CompletedProcess:
    return in_service(lab, "postgres", ["psql", "-X", "-At", "-h", "127.0.0.1", "-U", user, "-d",
                                        lab.values["POSTGRES_DB"], "-c", "SELECT 1"], env={"PGPASSWORD": password})


def assert_refused(res: subprocess.CompletedProcess, words: str) -> None:
    # redis-cli exits 0 after an error reply: the words say it
    assert words in res.stdout + res.stderr, res.stdout + res.stderr


def assert_only_new_passwords_work(lab, old: dict[str, str], login_before: str) -> None:
    """Each rotated password: the new one works, the old one is refused (by the login that had it)."""
    if "POSTGRES_PASSWORD" in old:
        assert superuser_login(lab, lab.values["POSTGRES_PASSWORD"]).stdout.strip() == "1"
        assert_refused(superuser_login(lab, old["POSTGRES_PASSWORD"]), "password authentication failed")
    if "POSTGRES_APP_PASSWORD" in old:
        login = app_login(lab)
        assert login != login_before and {login, login_before} == {lab.values["POSTGRES_APP_USER"],
                                                                  lab.values["POSTGRES_APP_USER"] + "_alt"}
        assert psql_as(lab, login, lab.values["POSTGRES_APP_PASSWORD"]).stdout.strip() == "1"
        assert_refused(psql_as(lab, login_before, old["POSTGRES_APP_PASSWORD"]), "password authentication failed")
    if "REDIS_PASSWORD" in old:
        ping = ["sh", "-c", 'REDISCLI_AUTH="$1" redis-cli ping', "sh"]
        assert_refused(in_service(lab, "redis", ping + [old["REDIS_PASSWORD"]]), "WRONGPASS")
        assert in_service(lab, "redis", ping + [lab.values["REDIS_PASSWORD"]]).stdout.strip() == "PONG"


def rotated_live(lab, names: list[str]) -> tuple[dict, object]:
    """``names`` rotated by a deploy under the prober; the servers took them running."""
    login_before = app_login(lab)
    old = rotate(lab, **{k: secrets.token_urlsafe(40) for k in names})
    res, report = probed(lab, "deploy", "--update-only")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    data = lab.manifest()
    assert data["details"]["secrets_rotated"] == sorted(names)
    assert not {"postgres", "redis"} & set(data["details"]["up"]["recreated"]), data["details"]["up"]
    assert_only_new_passwords_work(lab, old, login_before)
    assert STATE.get("note") is None or STATE["note"] in _notes(lab)      # django reads with the new values
    checks = {c["name"]: c["status"] for c in data["checks"]}
    assert not [n for n, s in checks.items() if s == "fail"], checks
    return data, report


@pytest.mark.parametrize("name", ["POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD", "REDIS_PASSWORD"])
def test_each_server_password_rotates_alone_with_no_failed_request(live, name):
    data, report = rotated_live(live, [name])
    assert data["details"]["secrets_live"] == {"postgres": name != "REDIS_PASSWORD",
                                               "redis": name == "REDIS_PASSWORD"}
    record(**{name.lower(): {"failed": len(report.failed), **report.summary()}})
    assert_available(report)


def test_database_and_redis_passwords_and_the_key_rotate_in_one_deploy_and_the_old_passwords_stop_working(live):
    data, report = rotated_live(live, ["POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD", "REDIS_PASSWORD",
                                       "DJANGO_SECRET_KEY"])
    record(all_four={"failed": len(report.failed), **report.summary(),
                     "failures": sorted({f"{p.route} {p.status or p.error}" for p in report.failed})})
    assert data["details"]["secrets_live"] == {"postgres": True, "redis": True}
    assert_available(report)


def container_id(lab, service: str) -> str:
    key = lab.values["SSH_KEY_PATH"]
    res = subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                          "-o", "BatchMode=yes", f"deploy@{STATE['ip']}",
                          f"docker ps -q --no-trunc --filter label=com.docker.compose.project={PROJECT} "
                          f"--filter label=com.docker.compose.service={service}"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip(), res.stderr
    return res.stdout.strip()


def flower_status(lab, password: str) -> int:
    session = pinned_session(PublicSite(ip=STATE["ip"], domain=lab.values["DOMAIN"], deploy_env="staging"))
    return session.get(f"https://flower.{lab.values['DOMAIN']}/", auth=("admin", password), timeout=15,
                       allow_redirects=False).status_code


def test_a_rotated_dashboard_password_is_reloaded_by_traefik_without_a_restart_or_a_failed_request(live):
    """FLOWER_BASIC_AUTH is in the folder Traefik's file provider watches (remote/edge_config.py),
    not in its environment: the edge keeps running, the new password opens Flower, the old one is
    refused. Rotated back at the end, so the lab's dashboard password stays the one in its state."""
    from lab.stackenv import htpasswd_bcrypt
    lab = live
    dashboard = (lab.tmp / "lab-state" / "dashboard-password").read_text().strip()
    assert flower_status(lab, dashboard) == 200
    traefik = container_id(lab, "traefik")
    figures = {}
    for new_password, old_password in ((secrets.token_urlsafe(18), dashboard), (dashboard, None)):
        rotate(lab, FLOWER_BASIC_AUTH=htpasswd_bcrypt("admin", new_password))
        res, report = probed(lab, "deploy", "--update-only")
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        data = lab.manifest()
        assert data["details"]["secrets_rotated"] == ["FLOWER_BASIC_AUTH"]
        assert data["details"]["edge_config"]["replaced"] == ["auth.yml"]
        assert data["details"]["up"]["recreated"] == [] and data["details"]["up"]["replaced"] == [], data["details"]["up"]
        assert container_id(lab, "traefik") == traefik, "Traefik was restarted for a new dashboard password"
        # Traefik's file provider applies a change within its 2 s throttle.
        deadline, status = time.monotonic() + 10, 0
        while time.monotonic() < deadline and status != 200:
            status = flower_status(lab, new_password)
            time.sleep(0.25)
        assert status == 200, f"the new Flower password got {status}"
        if old_password:
            assert flower_status(lab, old_password) == 401
        figures.setdefault("flower_basic_auth", {"failed": len(report.failed), **report.summary()})
        assert_available(report)
    record(**figures)


def test_the_deploy_ssh_key_rotates_on_the_droplet_and_in_the_account_and_the_old_one_is_refused(live):
    """`inv rotate-ssh-key` on the lab droplet's real sshd and the lab's DigitalOcean API: the new
    key opens the droplet, the old one is refused, the account holds the new one alone; the next
    task runs with the new key. Last in this module: the lab's env file takes the new key."""
    lab = live
    old = Path(lab.values["SSH_KEY_PATH"])
    new = keygen(lab.tmp / "rotated_ed25519")
    res = lab.inv("rotate-ssh-key", "--new-key", str(new), extra=QUIET)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert f"SSH_KEY_PATH={new}" in res.stdout
    login = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
             "-o", "IdentitiesOnly=yes", f"deploy@{STATE['ip']}", "true"]
    refused = subprocess.run(["ssh", "-i", str(old), *login[1:]], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr
    assert subprocess.run(["ssh", "-i", str(new), *login[1:]], capture_output=True, timeout=60).returncode == 0
    keys = requests.get(lab.values["DIGITALOCEAN_END_POINT"] + "account/keys", timeout=10,
                        headers={"Authorization": f"Bearer {lab.values['DIGITALOCEAN_TOKEN']}"}).json()["ssh_keys"]
    blobs = {k["public_key"].split()[1] for k in keys}
    assert blobs == {Path(f"{new}.pub").read_text().split()[1]}, keys
    lines = [l for l in lab.env_file.read_text().splitlines() if not l.startswith("SSH_KEY_PATH=")]
    lab.env_file.write_text("\n".join(lines + [f"SSH_KEY_PATH={new}"]) + "\n")
    lab.values["SSH_KEY_PATH"] = str(new)
    res = lab.inv("status", extra=QUIET)      # the next task reaches the droplet with the new key
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
