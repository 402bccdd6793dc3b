"""Before DNS propagates: a domain that resolves nowhere still gets every check, pinned to the IP.

The lookup must really fail without touching any outside resolver, so run_checks runs in a
child process inside its own mount namespace where /etc/resolv.conf names 127.0.0.1 only."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from deploy.checks.lines import human_line
from tests.checks.conftest import FAST, require, target_for

DOMAIN = "app.example.invalid"
CHILD = """
import json, sys
from deploy.checks import ChecksConfig, PublicSite, run_checks
report = run_checks(PublicSite(**json.loads(sys.argv[1])), ChecksConfig(**json.loads(sys.argv[2])))
print(json.dumps({"report": report.to_dict(), "files": report.files}))
"""


def _run_in_private_dns(tmp_path: Path, target: dict, config: dict) -> dict:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True) if shutil.which("unshare") else None
    require(probe is not None and probe.returncode == 0, "needs unshare -m (root) for a private resolv.conf")
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(resolv),
         sys.executable, "-c", CHILD, json.dumps(target), json.dumps(config)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_unresolvable_domain_warns_and_every_other_check_runs_pinned(edge, tmp_path):
    server = edge(domain=DOMAIN)
    target = target_for(server, domain=DOMAIN)
    out = _run_in_private_dns(tmp_path, {
        "ip": target.ip, "domain": target.domain, "deploy_env": target.deploy_env,
        "https_port": target.https_port, "http_port": target.http_port}, FAST)
    results = {r["name"]: r for r in out["report"]["results"]}

    assert results["dns"]["status"] == "warn"
    assert results["dns"]["message"].startswith(f"DNS WARNING: {DOMAIN} does not resolve")
    assert "does not resolve" in out["files"]["http/dns.txt"]
    assert human_line(results["dns"]).startswith("does not resolve (")
    others = {name: r["status"] for name, r in results.items() if name != "dns"}
    assert others == {name: "pass" for name in others}, others
    # The name travelled as SNI and Host, the packets went to the IP.
    assert set(server.seen.sni) == {DOMAIN, f"flower.{DOMAIN}", f"admin.{DOMAIN}"}
    assert {host for host, _ in server.seen.requests} == {DOMAIN, f"flower.{DOMAIN}", f"admin.{DOMAIN}"}
    assert results["tls"]["observed"]["covers_domain"] is True
