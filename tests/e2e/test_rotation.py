"""Secrets rotated by editing .env and deploying (issue 22), on the lab, under the prober (the
routes and rates of test_zero_downtime.py): DJANGO_SECRET_KEY alone, then POSTGRES_PASSWORD,
POSTGRES_APP_PASSWORD, REDIS_PASSWORD and DJANGO_SECRET_KEY in one deploy. Each deploy must
go live with the new values; the old database superuser password is refused afterwards; what
Django signed with the old key still loads (DJANGO_SECRET_KEY_FALLBACKS). Failed requests are
figures (.test-logs/rotation-figures.json), and none may fail: the key is a start-first
replacement of django; the passwords are taken by the running PostgreSQL and Redis beside the
old ones before the clients are replaced, and the old ones retired after (deploy/live_secrets.py).

Runs after test_zero_downtime.py on the same lab droplet; its values replace the lab's in
lab.env, and the rotated-out ones join the canary of test_backups.py."""
from __future__ import annotations

import json
import secrets
import shlex
import subprocess

import pytest

from tests.e2e.conftest import REPO, STATE
from tests.e2e.test_lab_deploy import _notes
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


def test_a_rotated_django_key_drops_no_request_and_what_the_old_key_signed_still_loads(live):
    lab = live
    signed = in_service(lab, "django", ["python", "-c", SIGN, "dumps"])
    assert signed.returncode == 0, signed.stderr
    rotate(lab, DJANGO_SECRET_KEY=secrets.token_urlsafe(48))
    res, report = probed(lab, "deploy", "--update-only")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    data = lab.manifest()
    assert data["details"]["secrets_rotated"] == ["DJANGO_SECRET_KEY"]
    assert data["details"]["up"]["replaced"] == ["django"], data["details"]["up"]
    loaded = in_service(lab, "django", ["python", "-c", SIGN, "loads", signed.stdout.strip()])
    assert loaded.stdout.strip() == "still signed in", loaded.stdout + loaded.stderr
    record(django_key={"failed": len(report.failed), **report.summary()})
    assert_available(report)


def test_database_and_redis_passwords_and_the_key_rotate_in_one_deploy_and_the_old_passwords_stop_working(live):
    lab = live
    old = rotate(lab, **{k: secrets.token_urlsafe(40) for k in ("POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD",
                                                                "REDIS_PASSWORD", "DJANGO_SECRET_KEY")})
    res, report = probed(lab, "deploy", "--update-only")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    data = lab.manifest()
    assert data["details"]["secrets_rotated"] == ["DJANGO_SECRET_KEY", "POSTGRES_APP_PASSWORD", "POSTGRES_PASSWORD",
                                                  "REDIS_PASSWORD"]
    record(all_four={"failed": len(report.failed), **report.summary(),
                     "failures": sorted({f"{p.route} {p.status or p.error}" for p in report.failed})})
    assert data["details"]["secrets_live"] == {"postgres": True, "redis": True}
    assert not {"postgres", "redis"} & set(data["details"]["up"]["recreated"]), data["details"]["up"]
    assert superuser_login(lab, lab.values["POSTGRES_PASSWORD"]).stdout.strip() == "1"
    refused = superuser_login(lab, old["POSTGRES_PASSWORD"])
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr, refused.stderr
    # the app's old login (the role itself) no longer logs in; the clients use its alternate
    app = lab.values["POSTGRES_APP_USER"]
    refused = in_service(lab, "postgres", ["psql", "-X", "-At", "-h", "127.0.0.1", "-U", app, "-d",
                                           lab.values["POSTGRES_DB"], "-c", "SELECT 1"],
                         env={"PGPASSWORD": old["POSTGRES_APP_PASSWORD"]})
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr, refused.stderr
    session = in_service(lab, "django", ["python", "-c", "import os; print(os.environ['POSTGRES_USER'])"])
    assert session.stdout.strip() == f"{app}_alt", session.stdout + session.stderr
    ping = ["sh", "-c", 'REDISCLI_AUTH="$1" redis-cli ping', "sh"]
    refused = in_service(lab, "redis", ping + [old["REDIS_PASSWORD"]])
    assert "WRONGPASS" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert in_service(lab, "redis", ping + [lab.values["REDIS_PASSWORD"]]).stdout.strip() == "PONG"
    assert STATE.get("note") is None or STATE["note"] in _notes(lab)      # django reads with the new app password
    checks = {c["name"]: c["status"] for c in data["checks"]}
    assert not [n for n, s in checks.items() if s == "fail"], checks
    assert_available(report)
