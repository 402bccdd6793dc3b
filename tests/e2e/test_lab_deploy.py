"""The whole product on the lab: provision -> push -> up -> verify -> collect on a new droplet, data kept across update-only and rollback,
only what changed rebuilt, lock contention, verify's complete and partial artifact sets.
Tests run in file order and build on the deployment the first one makes."""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time

import pytest
from urllib3.util.retry import Retry

from deploy.checks import PublicSite
from deploy.checks.pinned import PinnedAdapter, pinned_session
from lab import config as labconfig
from lab.services import pebble
from tests.e2e.conftest import QUIET, STATE

pytestmark = [pytest.mark.lab, pytest.mark.docker]

REMOTE_FILES = ("compose-ps.txt", "compose-ps.json", "traefik-static.yml", "dynamic.yml", "traefik-rawdata.json",
                "traefik-env.txt", "traefik-logs.txt", "curl-root.txt", "curl-api-health.txt", "current-release.txt",
                "docker-df.txt", "memory.txt", "env/api.txt", "env/django.txt", "env/postgres.txt")

def api(lab, ip: str):
    """A session to the lab's API that waits out a 429: the verify at the end of this module
    spends the operator's per-minute budget on purpose (its rate-limit burst), and the next
    module's first request must not fail for that."""
    target = PublicSite(ip=ip, domain=lab.values["DOMAIN"], deploy_env="production")
    session = pinned_session(target)
    patient = PinnedAdapter(target, max_retries=Retry(total=3, status_forcelist=[429], allowed_methods=None,
                                                      respect_retry_after_header=True, raise_on_status=False))
    session.mount("https://", patient)
    session.mount("http://", patient)
    return session, f"https://{lab.values['DOMAIN']}/api"


def ssh(lab, ip: str, command: str) -> str:
    key = lab.values["SSH_KEY_PATH"]
    res = subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                          "-o", "BatchMode=yes", f"deploy@{ip}", command], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def steps(data: dict) -> dict:
    return {s["name"]: s for s in data["steps"]}


def test_provision_push_up_verify_collect_put_a_new_droplet_live_step_by_step(lab):
    """The chain does what `inv deploy` does: provision ends with the droplet ready (push right
    after it needs no wait), push builds without going live, up puts the pushed release live."""
    t0 = time.monotonic()
    res = lab.inv("provision")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    prov = lab.manifest()
    ip = prov["target"]["ip"]
    STATE["ip"] = ip
    assert steps(prov)["bootstrap"]["status"] == "ok" and prov["details"]["bootstrap"]["cloud_init"] == "done"
    assert ssh(lab, ip, "docker compose version --short").strip()       # Docker answers the deploy user
    res = lab.inv("push", extra=QUIET)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    pushed = lab.manifest()["details"]["push"]["release_id"]
    assert ssh(lab, ip, "readlink /opt/stackdeploy/current || echo none").strip() == "none"   # nothing live yet
    res = lab.inv("up", extra=QUIET)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert lab.manifest()["details"]["live_release"] == pushed
    res = lab.inv("verify", extra=QUIET)
    STATE["full_seconds"] = time.monotonic() - t0
    STATE["verify_folder"] = lab.last_run()
    data = lab.manifest()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert data["outcome"] == "success"
    assert data["details"]["current_release"] == pushed
    res = lab.inv("collect")
    assert res.returncode == 0 and lab.manifest()["outcome"] == "success", res.stdout[-4000:]
    services = {s["service"]: s for s in data["details"]["services"]}
    expected = {"traefik", "frontend", "api", "django", "worker", "beat", "flower", "redis", "postgres"}
    assert expected <= set(services), services.keys()
    for name in expected:
        assert services[name]["state"] == "running", services[name]
        assert services[name]["health"] == "healthy", services[name]
    checks = {c["name"]: c["status"] for c in data["checks"]}
    assert checks["home"] == "pass" and checks["api-health"] == "pass"
    # The lab's knot server answers for the domain and Pebble issued the certificate over HTTP-01.
    assert checks["dns"] == "pass" and checks["tls"] == "pass"
    tls = next(c for c in data["checks"] if c["name"] == "tls")
    assert tls["observed"]["issuer_cn"].startswith("Pebble Intermediate CA"), tls
    assert tls["observed"]["covers_domain"] is True
    # A new stack's first full backup (to the lab's S3 endpoint) may still be running at its first verify.
    assert {name for name, status in checks.items() if status != "pass"} <= {"rate-limit", "backups: last backup"}, checks
    assert checks["backups: off the droplet"] == "pass" and checks["backups: WAL archiving"] == "pass"
    assert [w for w in data["warnings"] if not w.startswith("backups: last backup: no backup yet")] == []
    assert all(checks[f"header:{h}"] == "pass" for h in ("Strict-Transport-Security", "X-Content-Type-Options",
                                                          "X-Frame-Options", "Referrer-Policy"))
    assert checks["flower"] == "pass" and checks["admin-main-host"] == "pass"


def test_the_served_certificate_chains_to_the_running_pebbles_root(lab, tmp_path):
    """Not only the issuer's name: the chain Traefik serves verifies against the root this
    Pebble made at its start (management port /roots/0), for the domain's name."""
    cfg = labconfig.load(environ=lab.env())
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.issuing_roots(cfg))
    context = ssl.create_default_context(cafile=str(root))
    with socket.create_connection((STATE["ip"], 443), timeout=15) as raw:
        with context.wrap_socket(raw, server_hostname=lab.values["DOMAIN"]) as tls:
            assert tls.getpeercert()["subject"] == ((("commonName", lab.values["DOMAIN"]),),)


def test_artifact_set_is_complete_and_redacted(lab):
    folder = STATE["verify_folder"]
    for name in REMOTE_FILES:
        text = (folder / "remote" / name).read_text()
        assert not text.startswith("# collection failed"), f"{name}: {text[:300]}"
    static = (folder / "remote" / "traefik-static.yml").read_text()
    # The release's traefik.yml names the lab's test CA (ACME_TEST_CA); never LE production.
    assert f"caServer: {lab.values['ACME_CA_SERVER']}" in static and "acme-v02.api.letsencrypt.org" not in static
    assert "LEGO_CA_CERTIFICATES=/etc/traefik/ca/test-ca.pem" in (folder / "remote" / "traefik-env.txt").read_text()
    raw = json.loads((folder / "remote" / "traefik-rawdata.json").read_text())
    assert raw["routers"] and all(r.get("status") == "enabled" for r in raw["routers"].values())
    assert "strict-transport-security" in (folder / "remote" / "curl-root.txt").read_text().lower()
    secrets = [v for k, v in lab.values.items() if any(w in k for w in ("PASSWORD", "SECRET", "TOKEN", "AUTH")) and len(v) > 5]
    assert secrets
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for secret in secrets:
                assert secret not in text, f"a secret leaked into {path.relative_to(folder)}"


def test_data_written_through_the_api(lab):
    session, base = api(lab, STATE["ip"])
    note = f"kept-{time.time_ns()}"
    r = session.post(f"{base}/notes", json={"text": note}, timeout=15)
    assert r.status_code == 201, r.text
    STATE["note"] = note
    job = session.post(f"{base}/jobs", json={"text": "e2e"}, timeout=15).json()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = session.get(f"{base}/jobs/{job['id']}", timeout=15).json()
        if state.get("state") == "SUCCESS":
            break
        time.sleep(1)
    assert state.get("state") == "SUCCESS", state


def _notes(lab) -> list[str]:
    session, base = api(lab, STATE["ip"])
    r = session.get(f"{base}/notes", timeout=15)
    assert r.status_code == 200, r.text
    body = r.json()
    items = body if isinstance(body, list) else body.get("notes", body.get("results", []))
    return [n["text"] for n in items]


def test_update_only_without_change_rebuilds_nothing_and_is_faster(lab):
    t0 = time.monotonic()
    res = lab.inv("deploy", "--update-only", extra=QUIET)
    STATE["update_seconds"] = time.monotonic() - t0
    data = lab.manifest()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert data["mode"] == "update" and "provision" not in steps(data)
    assert data["details"]["up"]["rebuilt"] == [] and data["details"]["up"]["recreated"] == []
    assert STATE["update_seconds"] < 0.7 * STATE["full_seconds"], (STATE["update_seconds"], STATE["full_seconds"])
    assert STATE["note"] in _notes(lab)


def test_update_only_after_one_api_change_rebuilds_only_the_api(lab):
    main = lab.stack / "api" / "app" / "__init__.py"
    main.write_text(main.read_text() + "\n# e2e change\n")
    res = lab.inv("deploy", "--update-only", extra=QUIET)
    data = lab.manifest()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert data["details"]["up"]["rebuilt"] == ["api"]
    assert data["details"]["up"]["recreated"] == ["api"]
    assert data["details"]["push"]["changed_count"] == 1
    assert STATE["note"] in _notes(lab)


def test_second_deploy_while_locked_fails_fast_naming_the_holder(lab):
    ip = STATE["ip"]
    ssh(lab, ip, "mkdir /opt/stackdeploy/lock && echo '{\"who\": \"alice@laptop\", \"when\": \"2026-01-01T00:00:00+00:00\", "
                 "\"release\": \"r1\", \"command\": \"inv deploy\"}' > /opt/stackdeploy/lock/holder.json")
    try:
        t0 = time.monotonic()
        res = lab.inv("deploy", "--update-only", extra=QUIET)
        assert time.monotonic() - t0 < 15  # settings + token check + SSH connect + lock attempt
        assert res.returncode == 5, res.stdout + res.stderr
        assert "alice@laptop" in res.stdout + res.stderr
        assert steps(lab.manifest())["lock"]["status"] == "failed"
    finally:
        released = lab.inv("lock.release")
        assert released.returncode == 0, released.stderr
    assert "lock: free" in lab.inv("lock.status").stdout


def _releases(lab) -> list[tuple[str, bool, str]]:
    """(id, current, outcome) from `inv releases` (its releases.txt artifact), oldest first:
    `* <id>  <outcome>  <created>  by <who>  <service>=<image id> ...`."""
    res = lab.inv("releases")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = []
    for line in (lab.last_run() / "releases.txt").read_text().splitlines():
        release_id, outcome = line[2:].split()[:2]
        rows.append((release_id, line.startswith("*"), outcome))
    return rows


def test_rollback_returns_to_the_previous_release_with_data_kept(lab):
    before = _releases(lab)
    current = next(r for r, cur, _ in before if cur)
    previous = [r for r, _, _ in before if r < current][-1]
    res = lab.inv("rollback", extra=QUIET)
    data = lab.manifest()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert data["details"]["current_release"] == previous
    after = {r: (cur, outcome) for r, cur, outcome in _releases(lab)}
    assert after[previous][0] is True
    assert after[current] == (False, "rolled-back")
    assert STATE["note"] in _notes(lab)


def test_verify_alone_with_rate_limit_burst(lab):
    res = lab.inv("verify", extra={"CHECK_SAMPLES": "5"})
    data = lab.manifest()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["rate-limit"]["status"] == "pass", checks["rate-limit"]
    assert checks["latency-home"]["status"] == "pass"
    # The stack's first full backup runs on its own schedule: it may still be running now (its
    # check is the first deploy test's; the backup suite takes its own).
    early = [c for c in data["checks"] if c["name"] == "backups: last backup" and c["message"].startswith("no backup yet")]
    assert {c["name"]: c["status"] for c in data["checks"] if c["status"] != "pass" and c not in early} == {}
    assert [w for w in data["warnings"] if not w.startswith("backups: last backup: no backup yet")] == []
    folder = lab.last_run()
    for name in REMOTE_FILES:
        assert (folder / "remote" / name).is_file(), name


def test_verify_with_proxy_stopped_still_writes_every_file(lab):
    ip = STATE["ip"]
    ssh(lab, ip, "cd /opt/stackdeploy/current && docker compose -p stackdeploy stop traefik")
    try:
        res = lab.inv("verify", extra=QUIET)
        assert res.returncode != 0
        folder = lab.last_run()
        assert "collection failed" in (folder / "remote" / "traefik-rawdata.json").read_text()
        assert (folder / "remote" / "compose-ps.txt").read_text().strip()
        ps = json.loads((folder / "remote" / "compose-ps.json").read_text())
        assert {s["service"]: s["state"] for s in ps}["traefik"] == "exited"
        diff = lab.inv("runs.diff", "previous", env_file=False)
        assert diff.returncode == 0 and "+traefik: exited" in diff.stdout, diff.stdout + diff.stderr
    finally:
        up = lab.inv("up")
        assert up.returncode == 0, up.stdout[-3000:]


def test_deploy_with_a_refused_key_fails_clearly_and_keeps_the_run_folder(lab, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    res = lab.inv("deploy", "--update-only", extra={**QUIET, "SSH_KEY_PATH": str(other), "SSH_RETRIES": "0"})
    assert res.returncode == 1
    data = lab.manifest()
    assert data["outcome"] == "failed" and str(other) in data["error"]
    assert (lab.last_run() / "summary.md").is_file()
