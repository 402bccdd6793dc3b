"""Droplet containers through the backend directly: a clean cloud image booted by systemd, whose
own cloud-init applies the deployer's real user data; SSH hardening, Docker + Compose, firewall."""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import paramiko
import pytest

from deploy import hostkey
from deploy.cloud.user_data import build_user_data
from deploy.redact import SecretRegistry
from lab import config as labconfig
from lab import control, state
from lab.docker import docker, inspect, list_labelled
from lab.droplets import ContainerBackend, firewall
from lab.droplets.backend import DROPLET_LABEL
from lab.ports import free_port
from lab.services import s3
from remote import cloudinit
from remote.connection import SshError, SshEndpoint, connect, connector, host_entry
from remote.layout import ReleaseLayout
from remote.host import Host

from .conftest import TEST_PRELOAD, free_subnet, reachable

pytestmark = [pytest.mark.docker, pytest.mark.lab]

BASE = "/opt/stackdeploy"
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


class Droplet:
    """One brand-new droplet per module (its cloud-init installs Docker: ~1 min), shared by
    tests that each leave it as they found it."""

    def __init__(self, tmp, images) -> None:
        self.cfg = labconfig.LabConfig(name=f"labtest-{uuid.uuid4().hex[:8]}", subnet=free_subnet(),
                                       api_port=free_port(), state_dir=tmp / ".lab", preload=TEST_PRELOAD)
        self.key = state.ensure_keypair(tmp / "keys")
        self.host_key = hostkey.generate(SecretRegistry())
        self.backend = ContainerBackend(self.cfg, log=lambda m: None)
        user_data = build_user_data("deploy", self.key.with_suffix(".pub").read_text(), self.host_key, BASE)
        self.booted = time.monotonic()
        self.ip = self.backend.create(101, "web-1", [self.key.with_suffix(".pub").read_text()], user_data, ["lab"])
        self.ssh_after = time.monotonic() - self.booted
        self.known_hosts = tmp / "known_hosts"
        hostkey.pin(self.known_hosts, host_entry(self.ip, 22), self.host_key.public)
        self.target = Host(name="web-1", host=self.ip, layout=ReleaseLayout(BASE),
                             connector=connector(self.ssh_target())).open()
        self.progress: list[str] = []
        self.cloud_init = cloudinit.wait(self.target, 600, on_progress=self.progress.append)
        self.ready_after = time.monotonic() - self.booted
        print(f"droplet: SSH after {self.ssh_after:.1f}s, cloud-init done after {self.ready_after:.1f}s")

    def ssh_target(self, **kw) -> SshEndpoint:
        args = dict(host=self.ip, user="deploy", key_path=self.key, known_hosts_path=self.known_hosts,
                    connect_timeout=10, retries=1, backoff=0.5)
        return SshEndpoint(**{**args, **kw})

    def run(self, command: str, check: bool = True):
        return self.target.run(command, check=check, timeout=180)

    def close(self) -> None:
        self.target.close()
        control.down(self.cfg, log=lambda m: None)


@pytest.fixture(scope="module")
def droplet(tmp_path_factory, images):
    d = Droplet(tmp_path_factory.mktemp("droplet"), images)
    yield d
    d.close()


def test_cloud_init_applies_the_user_data_after_ssh_already_answers(droplet):
    assert droplet.cloud_init.state == "done" and droplet.cloud_init.errors == ()
    assert droplet.progress, "cloud-init was still running when SSH first answered"
    assert droplet.ready_after > droplet.ssh_after
    groups = set(droplet.run("id -nG").stdout.split())
    assert "docker" in groups and "sudo" not in groups
    assert droplet.run("stat -c %U:%a " + BASE).stdout.strip() == "deploy:755"
    assert "Docker Compose version" in droplet.run("docker compose version").stdout
    assert droplet.run("docker image inspect redis:7-bookworm -f '{{.Id}}'").ok   # the lab's vendor data
    # the engine gives every container no-new-privileges, even one that does not ask (a Swarm task)
    status = droplet.run("docker run --rm redis:7-bookworm grep NoNewPrivs /proc/self/status").stdout
    assert status.split() == ["NoNewPrivs:", "1"]
    # the only host key is the one the deployer generated
    assert droplet.run("ls /etc/ssh/ | grep '^ssh_host_.*pub$'").stdout.split() == ["ssh_host_ed25519_key.pub"]
    transport = paramiko.Transport((droplet.ip, 22))
    try:
        transport.start_client(timeout=10)
        shown = transport.get_remote_server_key()
    finally:
        transport.close()
    assert f"{shown.get_name()} {shown.get_base64()}" == droplet.host_key.public


def test_compose_runs_as_the_deploy_user(droplet):
    droplet.run("mkdir -p ~/app")
    droplet.target.put(f"/home/deploy/app/compose.yaml", COMPOSE.encode())
    try:
        droplet.run("cd ~/app && docker compose up -d --wait")
        assert droplet.run("cd ~/app && docker compose exec -T cache redis-cli get greeting").stdout.strip() == "hi"
    finally:
        droplet.run("cd ~/app && docker compose down", check=False)


def test_no_sudo_no_root_login_no_password_login(droplet):
    sudo = droplet.run("sudo -n true", check=False)
    assert not sudo.ok and "password is required" in sudo.stderr
    assert not droplet.run("sudo -n -l", check=False).ok
    with pytest.raises(SshError) as err:             # root, with the very key the droplet was made with
        connect(droplet.ssh_target(user="root"))
    assert "refused key" in str(err.value)
    transport = paramiko.Transport((droplet.ip, 22))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as bad:
            transport.auth_password("deploy", "any-password")
        assert bad.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_another_host_key_at_first_contact_is_refused(droplet, tmp_path):
    other = hostkey.generate(SecretRegistry())
    hostkey.pin(tmp_path / "kh", host_entry(droplet.ip, 22), other.public)
    with pytest.raises(SshError, match="changed"):
        connect(droplet.ssh_target(known_hosts_path=tmp_path / "kh"))
    with pytest.raises(SshError, match="not pinned") as err:
        connect(droplet.ssh_target(known_hosts_path=tmp_path / "empty"))
    assert "inv deploy" in err.value.hint


def test_a_key_not_given_at_creation_is_refused(droplet, tmp_path):
    other = state.ensure_keypair(tmp_path / "other")
    with pytest.raises(SshError, match="refused key"):
        connect(droplet.ssh_target(key_path=other))


def test_firewall_applied_from_many_threads_at_once_ends_as_one_whole_rule_set(droplet):
    """The fake API applies a droplet's rules from several threads at once (each new droplet's
    build, each firewall change). A flush landing between another apply's lines left that
    apply's final DROP first in the chain: SSH to a new swarm node timed out."""
    backend, did, gateway = droplet.backend, 101, droplet.cfg.gateway
    rules = [{"protocol": "tcp", "ports": "22", "sources": {"addresses": [f"{gateway}/32"]}}] + [
        {"protocol": "tcp", "ports": str(8000 + i), "sources": {"addresses": ["0.0.0.0/0"]}} for i in range(20)]
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: backend.apply_firewall(did, rules), range(16)))
        chain = [line for line in docker("exec", backend.container(did), "iptables", "-w", "-t", "mangle",
                                         "-S", firewall.CHAIN).splitlines() if line.startswith("-A ")]
        assert len(chain) == len(firewall.rule_lines(rules)), chain
        assert chain[-1] == f"-A {firewall.CHAIN} -j DROP" and chain.count(chain[-1]) == 1
        assert reachable(droplet.ip, 22)
    finally:
        backend.apply_firewall(did, [])


def test_firewall_allowlist_is_enforced_inside_the_droplet(droplet):
    backend, did, ip, lab_cfg = droplet.backend, 101, droplet.ip, droplet.cfg
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
    droplet.run("docker run -d --name edge -p 80:6379 redis:7-bookworm")
    try:
        assert reachable(ip, 22) and from_probe(22)
        backend.apply_firewall(did, [
            {"protocol": "tcp", "ports": "22", "sources": {"addresses": [f"{gateway}/32"]}}])
        assert reachable(ip, 22)
        assert not from_probe(22)                          # not on the allowlist: dropped
        assert not reachable(ip, 80, timeout=2)            # published port, not allowed
        out = droplet.run("docker run --rm redis:7-bookworm redis-cli -h $(docker inspect -f "
                          "'{{.NetworkSettings.IPAddress}}' edge) ping")   # the droplet's own traffic flows
        assert out.stdout.strip() == "PONG"

        backend.apply_firewall(did, [
            {"protocol": "tcp", "ports": "22", "sources": {"addresses": [f"{probe_ip}/32"]}},
            {"protocol": "tcp", "ports": "80", "sources": {"addresses": ["0.0.0.0/0", "::/0"]}}])
        assert from_probe(22)
        assert not reachable(ip, 22, timeout=2)
        assert reachable(ip, 80) and from_probe(80)
    finally:
        backend.apply_firewall(did, [])                    # firewall removed: open again
        assert reachable(ip, 22) and from_probe(22)
        droplet.run("docker rm -f edge", check=False)
        docker("rm", "-f", probe, check=False)


def test_the_s3_endpoint_is_reached_from_the_droplet_and_its_containers_behind_its_firewall(droplet):
    """The stack's postgres (pgBackRest) runs in the droplet's engine: its traffic to the lab's S3
    endpoint leaves through the droplet's eth0 (Docker's masquerade) like the droplet's own; the
    firewall filters only what comes in, and lets the answers back (conntrack)."""
    backend, did, cfg = droplet.backend, 101, droplet.cfg
    s3.ensure(cfg, log=lambda m: None)
    ip = s3.address(cfg)
    droplet.target.put("/home/deploy/s3-ca.pem", s3.ca_path(cfg).read_bytes())
    probe = f"docker run --rm redis:7-bookworm timeout 5 bash -c '</dev/tcp/{ip}/443' && echo open"
    try:
        backend.apply_firewall(did, [{"protocol": "tcp", "ports": "22", "sources": {"addresses": [f"{cfg.gateway}/32"]}}])
        answer = droplet.run(f"curl -sS --max-time 10 --cacert /home/deploy/s3-ca.pem https://{ip}/{s3.BUCKET}")
        assert "<Code>AccessDenied</Code>" in answer.stdout          # TLS verified, unsigned: refused
        assert droplet.run(probe).stdout.strip() == "open"          # from a container in the droplet
        with s3.outage(cfg):
            assert not droplet.run(probe, check=False).ok
        assert droplet.run(probe).stdout.strip() == "open"
    finally:
        backend.apply_firewall(did, [])


def test_delete_removes_the_container_and_its_volume(lab_cfg, keypair):
    backend = ContainerBackend(lab_cfg, log=lambda m: None)
    backend.create(102, "bare-1", [keypair.with_suffix(".pub").read_text()], None, ["lab"])
    backend.delete(102)
    label = f"{DROPLET_LABEL}={102}"
    assert list_labelled("container", lab_cfg.label, label) == []
    assert list_labelled("volume", lab_cfg.label, label) == []
    backend.delete(102)                                   # idempotent


def test_a_droplet_keeps_its_public_address_through_a_power_cycle(lab_cfg, keypair):
    """As on DigitalOcean: a droplet powered off and on keeps its address, and no droplet created
    meanwhile gets it (CI: a swarm node stopped and started again came back at another address
    while the API still listed the old one, which the next new node was then given)."""
    backend = ContainerBackend(lab_cfg, log=lambda m: None)
    keys = [keypair.with_suffix(".pub").read_text()]
    try:
        first = backend.create(103, "bare-1", keys, None, ["lab"])
        docker("stop", "-t", "0", backend.container(103))
        second = backend.create(104, "bare-2", keys, None, ["lab"])
        docker("start", backend.container(103))
        assert second != first and backend.ip(103) == first
    finally:
        backend.delete(103)
        backend.delete(104)


def test_delete_of_an_unknown_droplet_is_a_no_op(lab_cfg):
    backend = ContainerBackend(lab_cfg, log=lambda m: None)
    neighbour = backend.container(203)
    docker("create", "--name", neighbour, *backend._labels(203), "redis:7-bookworm")
    try:
        backend.delete(987654)                     # no error: there is nothing to delete
        assert inspect("container", neighbour) is not None, "deleting an unknown droplet removed another one"
        assert inspect("container", backend.container(987654)) is None
        assert inspect("volume", backend.volume(987654)) is None
    finally:
        backend.delete(203)
    assert inspect("container", neighbour) is None


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
