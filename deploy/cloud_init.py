"""cloud-init user data for a fresh droplet (pure function, no I/O).

The droplet must come up ready for `docker compose` over SSH as an unprivileged deploy
user: Docker Engine + Compose plugin from Ubuntu's archive (docker.io and
docker-compose-v2, so no third-party repository or key fetch is needed), the deploy user
in the docker group with only the operator's key, root/password SSH logins off. No port
is opened here: the Cloud Firewall is the only gate, managed by deploy/cloud.py.
"""
from __future__ import annotations

import re

import yaml

_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_KEY_RE = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+)\s+[A-Za-z0-9+/=]+(\s+.*)?$")

SSHD_HARDENING = """\
# Written by cloud-init (stackdeploy): key-only logins, no root.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
"""


class CloudInitError(ValueError):
    """The inputs cannot make a valid user-data document."""


def build_user_data(deploy_user: str, ssh_public_key: str) -> str:
    """Return the #cloud-config YAML for a droplet managed by `deploy_user`."""
    if not _USER_RE.match(deploy_user or "") or deploy_user == "root":
        raise CloudInitError(
            f"deploy user {deploy_user!r} is not a valid Linux user name "
            "(lowercase letters, digits, '_' or '-', not root)")
    key = (ssh_public_key or "").strip()
    if "\n" in key or not _KEY_RE.match(key):
        raise CloudInitError("the SSH public key must be one OpenSSH public key line "
                             "such as 'ssh-ed25519 AAAA... comment'")
    config = {
        "users": [{
            "name": deploy_user,
            "groups": ["docker"],
            "shell": "/bin/bash",
            "lock_passwd": True,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "ssh_authorized_keys": [key],
        }],
        "disable_root": True,
        "ssh_pwauth": False,
        "package_update": True,
        "packages": ["docker.io", "docker-compose-v2", "curl", "ca-certificates"],
        "groups": ["docker"],
        "write_files": [{
            "path": "/etc/ssh/sshd_config.d/60-stackdeploy.conf",
            "permissions": "0644",
            "content": SSHD_HARDENING,
        }],
        "runcmd": [
            ["systemctl", "enable", "--now", "docker"],
            ["usermod", "-aG", "docker", deploy_user],
            ["systemctl", "restart", "ssh"],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False, width=1000)
