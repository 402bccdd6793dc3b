"""Droplet containers through the backend directly: SSH, Docker + Compose inside, firewall."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from lab.docker import docker, list_labelled
from lab.droplets import ContainerBackend
from lab.droplets.backend import DROPLET_LABEL

from .conftest import reachable, ssh

pytestmark = [pytest.mark.docker, pytest.mark.lab]

COMPOSE = """\
services:
  cache:
    image: redis:7-bookworm
    healthcheck: {test: ["CMD", "redis-cli", "ping"], interval: 1s, retries: 30}
  client:
    image: redis:7-bookworm
    command: ["sh", "-c", "redis-cli -h cache set greeting hi && sleep infinity"]
    depends_on: {cache: {condition: service_healthy}}
"""


@pytest.fixture
def droplet(lab_cfg, keypair):
    backend = ContainerBackend(lab_cfg, log=lambda m: None)
    ip = backend.create(101, "web-1", [keypair.with_suffix(".pub").read_text()],
                        "#!/bin/sh\necho booted > /root/user-data-ran\n", ["lab"])
    yield backend, 101, ip
    backend.delete(101)


def test_create_ssh_compose_delete(droplet, keypair, lab_cfg):
    backend, did, ip = droplet
    with ssh(ip, keypair, "deploy") as c:
        assert {"deploy", "docker", "sudo"} <= set(c.run("id -nG", hide=True).stdout.split())
        assert c.run("sudo -n true", hide=True).ok
        assert "Docker Compose version" in c.run("docker compose version", hide=True).stdout
        c.run("mkdir -p app", hide=True)
        c.put(_tmpfile(COMPOSE), "app/compose.yaml")
        c.run("cd app && docker compose up -d --wait", hide=True, timeout=120)
        assert c.run("cd app && docker compose exec -T cache redis-cli get greeting",
                     hide=True).stdout.strip() == "hi"
        c.run("cd app && docker compose down", hide=True, timeout=60)
    with ssh(ip, keypair, "root") as c:
        wait = "for i in $(seq 60); do [ -f /root/user-data-ran ] && break; sleep 0.5; done; cat /root/user-data-ran"
        assert c.run(wait, hide=True).stdout.strip() == "booted"
    backend.delete(did)
    label = f"{DROPLET_LABEL}={did}"
    assert list_labelled("container", lab_cfg.label, label) == []
    assert list_labelled("volume", lab_cfg.label, label) == []
    backend.delete(did)                                   # idempotent


def test_a_key_not_given_at_creation_is_refused(droplet, tmp_path):
    from lab import state
    _, _, ip = droplet
    other = state.ensure_keypair(tmp_path / "other")
    with pytest.raises(Exception) as err:
        with ssh(ip, other) as c:
            c.run("true", hide=True)
    assert "Authentication failed" in str(err.value) or "not a valid" in str(err.value)


def test_firewall_allowlist_is_enforced_inside_the_droplet(droplet, keypair, lab_cfg):
    backend, did, ip = droplet
    gateway = lab_cfg.gateway
    # A second machine on the lab network, to connect from an address that is not the host's.
    probe = f"{lab_cfg.name}-probe"
    docker("run", "-d", "--name", probe, "--network", lab_cfg.network, "--label", lab_cfg.label,
           "stackdeploy-lab/base:bookworm", "sleep", "infinity")
    probe_ip = docker("inspect", "-f", f"{{{{(index .NetworkSettings.Networks \"{lab_cfg.network}\").IPAddress}}}}",
                      probe).strip()

    def from_probe(port: int) -> bool:
        return subprocess.run(["docker", "exec", probe, "timeout", "3", "bash", "-c",
                               f"</dev/tcp/{ip}/{port}"], capture_output=True).returncode == 0

    # Inside the droplet: a container publishing port 80, like Traefik would.
    with ssh(ip, keypair) as c:
        c.run("docker run -d --name edge -p 80:6379 redis:7-bookworm", hide=True)
    assert reachable(ip, 22) and from_probe(22)

    backend.apply_firewall(did, [
        {"protocol": "tcp", "ports": "22", "sources": {"addresses": [f"{gateway}/32"]}}])
    assert reachable(ip, 22)
    assert not from_probe(22)                          # not on the allowlist: dropped
    assert not reachable(ip, 80, timeout=2)            # published port, not allowed
    with ssh(ip, keypair) as c:                        # the droplet's own Docker traffic still flows
        out = c.run("docker run --rm redis:7-bookworm redis-cli -h $(docker inspect -f "
                    "'{{.NetworkSettings.IPAddress}}' edge) ping", hide=True)
        assert out.stdout.strip() == "PONG"

    backend.apply_firewall(did, [
        {"protocol": "tcp", "ports": "22", "sources": {"addresses": [f"{probe_ip}/32"]}},
        {"protocol": "tcp", "ports": "80", "sources": {"addresses": ["0.0.0.0/0", "::/0"]}}])
    assert from_probe(22)
    assert not reachable(ip, 22, timeout=2)
    assert reachable(ip, 80) and from_probe(80)

    backend.apply_firewall(did, [])                    # firewall removed: open again
    assert reachable(ip, 22) and from_probe(22)


def _tmpfile(text: str):
    import io
    return io.StringIO(text)


def test_delete_of_an_unknown_droplet_is_a_no_op(lab_cfg):
    ContainerBackend(lab_cfg, log=lambda m: None).delete(987654)
    time.sleep(0)


def test_delete_retries_when_the_engine_refuses_a_removal_once(lab_cfg, tmp_path, monkeypatch):
    """A loaded engine sometimes answers `rm -f` with an error (seen in CI: the container stayed,
    the error was swallowed). delete must retry until the container is gone."""
    backend = ContainerBackend(lab_cfg, log=lambda m: None)
    cname = backend.container(202)
    docker("create", "--name", cname, *backend._labels(202), "redis:7-bookworm")
    real = subprocess.run(["sh", "-c", "command -v docker"], capture_output=True, text=True).stdout.strip()
    shim = tmp_path / "bin" / "docker"
    shim.parent.mkdir()
    shim.write_text(f"""#!/bin/sh
if [ "$1" = rm ] && [ ! -e {tmp_path}/refused ]; then
  touch {tmp_path}/refused
  echo "Error response from daemon: could not kill container: tried to kill container" >&2
  exit 1
fi
exec {real} "$@"
""")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    try:
        backend.delete(202)
        assert (tmp_path / "refused").exists()            # the refusal really happened
        assert list_labelled("container", lab_cfg.label, f"{DROPLET_LABEL}=202") == []
    finally:
        monkeypatch.undo()
        docker("rm", "-f", cname, check=False)
