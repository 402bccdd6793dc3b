from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from deploy import hostkey
from deploy.cloud.user_data import CloudInitError, build_user_data
from deploy.redact import SecretRegistry
from tests.cloud.conftest import KEY

HOST_KEY = hostkey.generate(SecretRegistry())


def _user_data(**changes) -> str:
    args = {"deploy_user": "deploy", "ssh_public_key": KEY, "host_key": HOST_KEY, "base_dir": "/opt/stackdeploy"}
    return build_user_data(**{**args, **changes})


def _schema(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    exe = shutil.which("cloud-init")
    assert exe, "cloud-init is not installed: run `bash scripts/setup.sh` (scripts/setup.d/cloud-init.sh)"
    doc = tmp_path / "user-data"
    doc.write_text(text)
    return subprocess.run([exe, "schema", "--config-file", str(doc)], capture_output=True, text=True)


def test_user_data_is_cloud_config_with_user_key_and_docker():
    text = _user_data()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    [user] = doc["users"]
    assert user["name"] == "deploy" and user["ssh_authorized_keys"] == [KEY]
    assert "docker" in user["groups"] and user["lock_passwd"] is True
    assert "sudo" not in user and "sudo" not in user["groups"]   # no sudo at all
    assert {"docker.io", "docker-compose-v2"} <= set(doc["packages"])
    assert doc["disable_root"] is True and doc["ssh_pwauth"] is False
    sshd, docker_defaults = doc["write_files"]
    assert "PermitRootLogin no" in sshd["content"] and "PasswordAuthentication no" in sshd["content"]
    assert docker_defaults["path"] == "/etc/default/docker"
    assert 'DOCKER_OPTS="--no-new-privileges"' in docker_defaults["content"]
    assert ["systemctl", "enable", "--now", "docker"] in doc["runcmd"]
    assert ["install", "-d", "-m", "0755", "-o", "deploy", "-g", "deploy", "/opt/stackdeploy"] in doc["runcmd"]
    # nothing here opens ports: the Cloud Firewall is the only gate
    assert "ufw" not in text and "iptables" not in text


def test_the_generated_host_key_is_handed_over_whole():
    doc = yaml.safe_load(_user_data())
    assert doc["ssh_keys"] == {"ed25519_private": HOST_KEY.private, "ed25519_public": HOST_KEY.public}
    assert doc["ssh_deletekeys"] is True


def test_cloud_init_itself_accepts_the_document(tmp_path):
    proc = _schema(tmp_path, _user_data())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout


def test_cloud_init_schema_check_can_fail(tmp_path):
    """The validation above is real: a wrong type is refused by the same command."""
    proc = _schema(tmp_path, _user_data() + "ssh_authorized_keys: 5\n")
    assert proc.returncode != 0 and "ssh_authorized_keys" in proc.stdout + proc.stderr


def test_the_private_host_key_is_registered_as_a_secret():
    reg = SecretRegistry()
    key = hostkey.generate(reg)
    from deploy.redact import redact
    body = key.private.splitlines()[2]
    assert body not in redact(_user_data(host_key=key), reg)
    assert "HostKey(" in repr(key) and key.private not in repr(key)


@pytest.mark.parametrize("user", ["root", "Deploy", "", "a b", "x" * 40])
def test_bad_user_names_are_refused(user):
    with pytest.raises(CloudInitError, match="user name"):
        _user_data(deploy_user=user)


@pytest.mark.parametrize("key", ["", "not a key", KEY + "\nssh-ed25519 AAAA second", "-----BEGIN OPENSSH PRIVATE KEY-----"])
def test_bad_keys_are_refused(key):
    with pytest.raises(CloudInitError, match="public key"):
        _user_data(ssh_public_key=key)


@pytest.mark.parametrize("base", ["", "relative/dir", "/", "/opt/../etc", "/opt/a b", "/opt/$(x)"])
def test_bad_release_roots_are_refused(base):
    with pytest.raises(CloudInitError, match="release root"):
        _user_data(base_dir=base)


def test_two_runs_keeping_a_host_key_at_once_do_not_trip_over_each_other(tmp_path):
    """Two full deploys on one machine keep their pending keys at the same moment (provisioning
    runs before the deploy lock): a shared temp file name made one fail with FileNotFoundError."""
    keys = [hostkey.generate(), hostkey.generate()]
    failures: list[BaseException] = []

    def keep(key: hostkey.HostKey) -> None:
        for _ in range(100):
            try:
                hostkey.save_pending(key, tmp_path / "known_hosts", "stackdeploy-1")
            except OSError as exc:
                failures.append(exc)
    threads = [threading.Thread(target=keep, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
