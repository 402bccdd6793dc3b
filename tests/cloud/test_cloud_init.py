from __future__ import annotations

import pytest
import yaml

from deploy.cloud_init import CloudInitError, build_user_data
from tests.cloud.conftest import KEY


def test_user_data_is_cloud_config_with_user_key_and_docker():
    text = build_user_data("deploy", KEY)
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    [user] = doc["users"]
    assert user["name"] == "deploy" and user["ssh_authorized_keys"] == [KEY]
    assert "docker" in user["groups"] and user["lock_passwd"] is True
    assert {"docker.io", "docker-compose-v2"} <= set(doc["packages"])
    assert doc["disable_root"] is True and doc["ssh_pwauth"] is False
    [sshd] = doc["write_files"]
    assert "PermitRootLogin no" in sshd["content"] and "PasswordAuthentication no" in sshd["content"]
    assert ["systemctl", "enable", "--now", "docker"] in doc["runcmd"]
    # nothing here opens ports: the Cloud Firewall is the only gate
    assert "ufw" not in text and "iptables" not in text


@pytest.mark.parametrize("user", ["root", "Deploy", "", "a b", "x" * 40])
def test_bad_user_names_are_refused(user):
    with pytest.raises(CloudInitError, match="user name"):
        build_user_data(user, KEY)


@pytest.mark.parametrize("key", ["", "not a key", KEY + "\nssh-ed25519 AAAA second", "-----BEGIN OPENSSH PRIVATE KEY-----"])
def test_bad_keys_are_refused(key):
    with pytest.raises(CloudInitError, match="public key"):
        build_user_data("deploy", key)
