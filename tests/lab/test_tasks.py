"""`inv lab.*` as a user runs it: up, env, a droplet through the API, status, down."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values

from lab.docker import docker, inspect, list_labelled
from lab.services import dns as labdns
from lab.services import registry as labregistry

from .conftest import make_cfg

pytestmark = [pytest.mark.docker, pytest.mark.lab]
INV = str(Path(sys.executable).with_name("inv"))


def inv(workdir: Path, cfg, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, **cfg.to_env()}
    proc = subprocess.run([INV, "--search-root", str(workdir), *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def project(tmp_path):
    (tmp_path / "tasks.py").write_text(
        "from invoke import Collection\nimport lab.tasks\nns = Collection()\nns.add_collection(lab.tasks.ns)\n")
    return tmp_path


def test_env_before_up_says_what_to_do(project, tmp_path):
    cfg = make_cfg(tmp_path)
    out = inv(project, cfg, "lab.env", check=False)
    assert out.returncode == 2 and "inv lab.up" in out.stderr and "Traceback" not in out.stderr


def test_up_env_droplet_down_removes_only_the_lab(project, tmp_path, images, keypair):
    cfg = make_cfg(tmp_path)
    # Unrelated objects, one even made from a lab image (it inherits the image's labels).
    other = f"unrelated-{cfg.name}"
    docker("volume", "create", other)
    docker("run", "-d", "--name", other, "-v", f"{other}:/data", "stackdeploy-lab/base:bookworm",
           "sleep", "infinity")
    try:
        inv(project, cfg, "lab.up")
        env = dotenv_values(stream=__import__("io").StringIO(inv(project, cfg, "lab.env").stdout))
        assert env["DIGITALOCEAN_END_POINT"] == f"http://127.0.0.1:{cfg.api_port}/v2/"
        assert env["DOMAIN"] == cfg.domain and Path(env["SSH_KEY_PATH"]).exists()
        assert oct(Path(env["SSH_KEY_PATH"]).stat().st_mode & 0o777) == "0o600"
        assert requests.get(env["OPERATOR_IP_URL"], timeout=5).text.strip() == cfg.gateway
        auth = {"Authorization": f"Bearer {env['DIGITALOCEAN_TOKEN']}"}
        dom = requests.get(env["DIGITALOCEAN_END_POINT"] + f"domains/{cfg.domain}", headers=auth, timeout=5)
        assert dom.status_code == 200                        # the lab domain is "managed"
        # ... and served by the lab's DNS server; Pebble answers on its listener certificate.
        assert env["DNS_RESOLVER"] == cfg.dns_ip and labdns.soa_serial(cfg.dns_ip, cfg.domain)
        assert env["ACME_TEST_CA"] == "true" and env["ACME_CA_SERVER"] == f"https://{cfg.pebble_ip}:14000/dir"
        directory = requests.get(env["ACME_CA_SERVER"], verify=env["ACME_TEST_CA_ROOT"], timeout=10).json()
        assert directory["newOrder"].startswith(f"https://{cfg.pebble_ip}:14000/")
        # The container registry (DOCR's stand-in): the API's Docker login names it, it takes the token.
        made = requests.post(env["DIGITALOCEAN_END_POINT"] + "registry", headers=auth, timeout=5,
                             json={"name": "lab", "subscription_tier_slug": "basic"})
        assert made.status_code == 201, made.text
        creds = requests.get(env["DIGITALOCEAN_END_POINT"] + "registry/docker-credentials", headers=auth,
                             timeout=5).json()
        assert list(creds["auths"]) == [labregistry.server(cfg)]
        assert labregistry.answers(cfg, env["DIGITALOCEAN_TOKEN"])
        if (Path(__file__).parents[2] / "stack" / ".env.example").exists():
            assert env["POSTGRES_PASSWORD"] and "change-me" not in env["POSTGRES_PASSWORD"]
            assert env["DASHBOARD_ALLOWLIST"] == f"{cfg.gateway}/32"

        r = requests.post(env["DIGITALOCEAN_END_POINT"] + "droplets", headers=auth, timeout=10, json={
            "name": "web-1", "region": "fra1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64",
            "ssh_keys": [], "tags": []})
        assert r.status_code == 202, r.text
        did = r.json()["droplet"]["id"]
        deadline = time.monotonic() + 180
        while requests.get(env["DIGITALOCEAN_END_POINT"] + f"droplets/{did}", headers=auth,
                           timeout=5).json()["droplet"]["status"] != "active":
            assert time.monotonic() < deadline
            time.sleep(1)
        status = inv(project, cfg, "lab.status").stdout
        assert "API: running" in status and f"droplet {did}: web-1" in status

        pid = int(__import__("json").loads((cfg.state_dir / "state.json").read_text())["pid"])
        # The API token is not on the API process's command line (readable by every local user).
        assert env["DIGITALOCEAN_TOKEN"].encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        inv(project, cfg, "lab.down")
        for kind in ("container", "volume", "network"):
            assert list_labelled(kind, cfg.label) == [], kind
        assert not Path(f"/proc/{pid}").exists() or b"lab.fake_do" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        with pytest.raises(requests.ConnectionError):
            requests.get(env["OPERATOR_IP_URL"], timeout=2)
        assert not (cfg.state_dir / "state.json").exists()
        assert not (cfg.state_dir / "dns").exists() and not (cfg.state_dir / "pebble").exists()
        assert not (cfg.state_dir / "registry").exists()
        assert inspect("container", other)["State"]["Running"] and inspect("volume", other)
        assert inspect("image", "redis:7-bookworm") is not None   # cache kept unless --purge-images
    finally:
        subprocess.run(["docker", "rm", "-f", other], capture_output=True)
        subprocess.run(["docker", "volume", "rm", other], capture_output=True)
        from lab import control
        control.down(cfg, log=lambda m: None)
