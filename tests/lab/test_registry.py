"""The lab's container registry, for real: Debian's docker-registry in a container on a throwaway
lab network, the host's Docker engine as its client (trusting the lab CA through
/etc/docker/certs.d/<address>/ for the test's length), the node-side commands run through a real
SSH Host, and the login handed out by the fake API in-process. No droplet is started."""
from __future__ import annotations

import base64
import getpass
import json
import os
import secrets
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from deploy.cloud import registry as docr
from deploy.cloud import CloudSpec
from deploy.redact import SecretRegistry
from lab import config as labconfig
from lab import control
from lab.docker import docker, inspect
from lab.droplets.network import ensure_network
from lab.fake_do import FakeDigitalOcean
from lab.images import builder, recipes
from lab.services import registry
from lab.services.containers import container_name
from remote import registry_cmds as rc
from remote.connection import SshEndpoint, connect
from remote.layout import ReleaseLayout
from remote.host import SshExecutor, Host
from tests.conftest import need
from tests.lab.conftest import make_cfg, require_docker
from tests.remote.conftest import commands_run  # noqa: F401 - a fixture: every command line sent over SSH
from tests.remote.sshd import pin

CERTS_D = Path("/etc/docker/certs.d")


@dataclass
class Lab:
    cfg: labconfig.LabConfig
    token: str
    server: str


def quiet(_message: str) -> None:
    return None


def start_lab(tmp: Path) -> tuple[Lab, Path]:
    """A lab network and its registry (token shaped like the lab's), trusted by the host engine."""
    cfg = make_cfg(tmp)
    made, certs = Lab(cfg, secrets.token_hex(32), registry.server(cfg)), CERTS_D / registry.server(cfg)
    try:
        ensure_network(cfg)
        registry.ensure(cfg, made.token, log=quiet)
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copy(registry.ca_path(cfg), certs / "ca.crt")
    except BaseException:
        stop_lab(made, certs)
        raise
    return made, certs


def stop_lab(lab: Lab, certs: Path) -> None:
    control.down(lab.cfg, log=quiet)
    shutil.rmtree(certs, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_docker()
    need(os.access(CERTS_D.parent, os.W_OK), f"write access to {CERTS_D.parent} (the host engine trusts a "
                                             "registry's CA from certs.d)", missing="is missing")
    builder.ensure_image(recipes.REGISTRY, log=print)
    made, certs = start_lab(tmp_path_factory.mktemp("registry"))
    yield made
    stop_lab(made, certs)


@pytest.fixture
def tiny(tmp_path):
    """A one-file image of its own content (its id is what a pull must bring back)."""
    (tmp_path / "marker").write_text(secrets.token_hex(16))
    tar = subprocess.run(["tar", "-C", str(tmp_path), "-c", "marker"], capture_output=True, check=True).stdout
    tag = f"stackdeploy-regtest/tiny-{secrets.token_hex(4)}:1"
    image_id = docker("import", "-", tag, input=tar).strip()
    yield tag, image_id
    docker("rmi", "-f", image_id, check=False)


def host_docker(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "--config", str(config), *args], input=stdin, capture_output=True, text=True,
                          timeout=120)


def catalog(lab: Lab, user: str, password: str) -> requests.Response:
    return requests.get(f"https://{lab.server}/v2/_catalog", auth=(user, password), verify=str(registry.ca_path(lab.cfg)),
                        timeout=10)


def registry_log(lab: Lab) -> str:
    proc = subprocess.run(["docker", "logs", container_name(lab.cfg, registry.ROLE)], capture_output=True, text=True,
                          timeout=30)
    return proc.stdout + proc.stderr


def test_the_address_is_the_third_highest_beside_dns_and_pebble():
    cfg = labconfig.LabConfig(subnet="10.77.0.0/24")
    assert registry.address(cfg) == registry.server(cfg) == "10.77.0.252"
    assert len({registry.address(cfg), cfg.dns_ip, cfg.pebble_ip}) == 3
    assert registry.address(labconfig.LabConfig(subnet="10.90.16.0/28")) == "10.90.16.12"


def test_https_only_with_the_lab_ca_and_a_login_like_docr(lab):
    url = f"https://{lab.server}/v2/"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=10)                        # not a publicly trusted certificate
    anonymous = requests.get(url, verify=str(registry.ca_path(lab.cfg)), timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert catalog(lab, lab.token, lab.token).status_code == 200
    assert catalog(lab, lab.token, "not-the-token").status_code == 401
    assert catalog(lab, "someone", lab.token).status_code == 401
    assert stat.S_IMODE(registry.htpasswd_path(lab.cfg).stat().st_mode) == 0o600


def test_docker_login_from_the_host_takes_the_token_and_refuses_a_wrong_password(lab, tmp_path):
    good = host_docker(tmp_path / "good", "login", lab.server, "--username", lab.token, "--password-stdin",
                       stdin=lab.token)
    assert good.returncode == 0, good.stderr
    assert "Login Succeeded" in good.stdout
    saved = json.loads((tmp_path / "good" / "config.json").read_text())["auths"][lab.server]["auth"]
    assert base64.b64decode(saved).decode() == f"{lab.token}:{lab.token}"   # what the fake API hands out
    wrong = host_docker(tmp_path / "wrong", "login", lab.server, "--username", lab.token, "--password-stdin",
                        stdin="wrong-" + lab.token)
    assert wrong.returncode != 0 and "401 Unauthorized" in wrong.stderr
    assert not (tmp_path / "wrong" / "config.json").exists() or \
        lab.server not in (tmp_path / "wrong" / "config.json").read_text()


@pytest.fixture
def node(sshd, tmp_path, commands_run):
    """The host as a node the deploy reaches over SSH, and every command line sent to it."""
    ssh = SshEndpoint(host="127.0.0.1", user=getpass.getuser(), key_path=sshd.user_key, port=sshd.port,
                    known_hosts_path=pin(sshd, tmp_path / "known_hosts"), connect_timeout=5, retries=2, backoff=0.1)
    conn = connect(ssh)
    target = Host(name="node", host="127.0.0.1", layout=ReleaseLayout(str(tmp_path / "opt")),
                    connector=lambda quick: SshExecutor(conn)).open()
    yield target, commands_run
    conn.close()


def test_a_node_pushes_and_pulls_with_the_login_the_api_hands_out_and_no_secret_leaks(lab, tiny, node, tmp_path):
    target, commands = node
    source, image_id = tiny
    with FakeDigitalOcean(lab.token, registry_server=lab.server) as api:
        spec = CloudSpec(token=lab.token, droplet_name="node", endpoint=api.base_url, request_timeout=5.0)
        made = docr.ensure_registry(spec, "stackdeploy")
        login = docr.docker_credentials(spec, registry=SecretRegistry())
    assert login.server == lab.server
    ref = docr.image_ref(login.server, made.name, "regtest/tiny", "r1")
    config_dir = str(tmp_path / "opt" / ".docker")
    (tmp_path / "opt").mkdir()

    rc.login(target, config_dir, login.server, login.auth.reveal())
    assert stat.S_IMODE(os.stat(config_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(f"{config_dir}/config.json").st_mode) == 0o600
    assert [p.name for p in (tmp_path / "opt").iterdir()] == [".docker"]     # the staged file is gone
    target.run(rc.tag_command(source, ref), "tagging")
    target.run(rc.push_command(config_dir, ref), "pushing", timeout=120)
    assert "stackdeploy/regtest/tiny" in catalog(lab, lab.token, lab.token).json()["repositories"]

    docker("rmi", ref)                                # the pull must fetch it from the registry
    target.run(rc.pull_command(config_dir, ref), "pulling", timeout=120)
    assert inspect("image", ref)["Id"] == image_id

    target.run(rc.logout_command(config_dir, login.server), "logging out")
    assert lab.server not in Path(config_dir, "config.json").read_text()
    refused = target.run(rc.pull_command(config_dir, ref), check=False, timeout=120)
    assert not refused.ok and ("no basic auth credentials" in refused.output or "unauthorized" in refused.output)

    secrets_seen = (lab.token, login.auth.reveal())
    assert commands and not [c for c in commands for s in secrets_seen if s in c]   # never on a command line
    # Nor in the registry's log, though distribution names the user of every failed login there.
    assert catalog(lab, lab.token, "wrong").status_code == 401
    log = registry_log(lab)
    assert 'error authenticating user \\"***\\"' in log and not [s for s in secrets_seen if s in log]


def test_a_new_token_replaces_the_old_images_stay_and_lab_down_removes_it_all(lab, tiny, tmp_path):
    other, certs = start_lab(tmp_path)
    try:
        source, _ = tiny
        ref = docr.image_ref(other.server, "kept", "tiny", "1")
        config = tmp_path / "client"
        config.mkdir()
        auth = base64.b64encode(f"{other.token}:{other.token}".encode()).decode()
        (config / "config.json").write_text(rc.docker_config(other.server, auth))
        docker("tag", source, ref)
        pushed = host_docker(config, "push", "--quiet", ref)
        assert pushed.returncode == 0, pushed.stderr

        new_token = secrets.token_hex(32)
        registry.ensure(other.cfg, new_token, log=quiet)
        assert catalog(other, other.token, other.token).status_code == 401
        assert catalog(other, new_token, new_token).json()["repositories"] == ["kept/tiny"]
    finally:
        stop_lab(other, certs)
    assert inspect("container", container_name(other.cfg, registry.ROLE)) is None
    assert inspect("volume", registry.volume_name(other.cfg)) is None
    assert not (other.cfg.state_dir / "registry").exists()
