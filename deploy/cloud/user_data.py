"""cloud-init user data for a fresh droplet (pure function, no I/O).

The droplet must come up ready for `docker compose` over SSH as an unprivileged deploy
user: Docker Engine + Compose plugin from the distribution's archive (docker.io and
docker-compose-v2, so no third-party repository or key fetch is needed), the deploy user
in the docker group with only the operator's key and no sudo at all (what needs root is
done here, once, by cloud-init: the release root is created and handed to the user),
root/password SSH logins off, and the SSH host key the deployer generated and pinned
(deploy/hostkey.py), so the first contact needs no trust on first use. Nothing here is
distribution-specific: the same document serves Ubuntu 24.04 on DigitalOcean and the
lab's Debian 12 droplets. No port is opened here: the Cloud Firewall is the only gate,
managed by deploy/cloud/firewall.py.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from deploy.hostkey import HostKey

_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]+$")
_KEY_RE = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+)\s+[A-Za-z0-9+/=]+(\s+.*)?$")

SSHD_HARDENING = """\
# Written by cloud-init (stackdeploy): key-only logins, no root.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
"""


# Every container the engine starts gets no-new-privileges (setuid binaries cannot raise
# privileges), whatever its definition says: Swarm services cannot set security_opt, and a
# droplet may join a swarm later (growing from 1 node). Debian's and Ubuntu's docker.io units
# read DOCKER_OPTS from here; daemon.json is left to the image (the lab's sets cgroups there).
DOCKER_DEFAULTS = """\
# Written by cloud-init (stackdeploy).
DOCKER_OPTS="--no-new-privileges"
"""


class CloudInitError(ValueError):
    """The inputs cannot make a valid user-data document."""


def build_user_data(deploy_user: str, ssh_public_key: str, host_key: HostKey, base_dir: str) -> str:
    """Return the #cloud-config YAML for a droplet managed by `deploy_user`, whose SSH host
    key is `host_key` and whose release root `base_dir` belongs to that user."""
    if not _USER_RE.match(deploy_user or "") or deploy_user == "root":
        raise CloudInitError(
            f"deploy user {deploy_user!r} is not a valid Linux user name "
            "(lowercase letters, digits, '_' or '-', not root)")
    key = (ssh_public_key or "").strip()
    if "\n" in key or not _KEY_RE.match(key):
        raise CloudInitError("the SSH public key must be one OpenSSH public key line "
                             "such as 'ssh-ed25519 AAAA... comment'")
    if not _PATH_RE.match(base_dir or "") or ".." in base_dir.split("/") or base_dir.rstrip("/") in ("", "/"):
        raise CloudInitError(f"release root {base_dir!r} is not an absolute path below / "
                             "(letters, digits, '.', '_', '-', '/')")
    config = {
        "users": [{
            "name": deploy_user,
            "groups": ["docker"],
            "shell": "/bin/bash",
            "lock_passwd": True,
            "ssh_authorized_keys": [key],
        }],
        "disable_root": True,
        # Only the host key the deployer pinned: the image's keys are deleted, and with
        # ssh_keys given cloud-init generates no other type.
        "ssh_deletekeys": True,
        "ssh_keys": {"ed25519_private": host_key.private, "ed25519_public": host_key.public},
        "ssh_pwauth": False,
        "package_update": True,
        "packages": ["docker.io", "docker-compose-v2", "curl", "ca-certificates"],
        "groups": ["docker"],
        "write_files": [{
            "path": "/etc/ssh/sshd_config.d/60-stackdeploy.conf",
            "permissions": "0644",
            "content": SSHD_HARDENING,
        }, {
            # before the packages: dockerd starts with it the first time
            "path": "/etc/default/docker",
            "permissions": "0644",
            "content": DOCKER_DEFAULTS,
        }],
        "runcmd": [
            ["systemctl", "enable", "--now", "docker"],
            ["install", "-d", "-m", "0755", "-o", deploy_user, "-g", deploy_user, base_dir],
            ["systemctl", "restart", "ssh"],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False, width=1000)
