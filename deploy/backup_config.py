"""Where the database's backups go, from the settings: the stack variables the deployer fills
in for the postgres service, the files it adds to the release, and the checks that involve
several settings. The repository itself is configured inside the image (stack/postgres/
backup-env.sh); this module only decides what that script is given."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from core.errors import ConfigError

# The test endpoint's CA (the lab's S3 service), shipped in the release like Traefik's test CA.
TEST_CA_RELEASE_PATH = "postgres/ca/spaces-ca.pem"
TEST_CA_CONTAINER_PATH = "/etc/stack-postgres/ca/spaces-ca.pem"
SPACES_DOCS = "https://docs.digitalocean.com/products/spaces/how-to/manage-access/"
_CIPHER_COMMAND = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


class BackupChoice(Protocol):
    droplet_name: str
    spaces_test_ca_root: str


def _value(stack_env: Mapping[str, Any], name: str) -> str:
    value = stack_env.get(name)
    if value is None:
        return ""
    reveal = getattr(value, "reveal", None)
    return str(reveal() if callable(reveal) else value)


def off_droplet(stack_env: Mapping[str, Any]) -> bool:
    """True when the repository is a bucket (Spaces), not a directory on the droplet itself."""
    return bool(_value(stack_env, "SPACES_BUCKET"))


def repo_path(settings: BackupChoice, stack_env: Mapping[str, Any]) -> str:
    """The repository's path in the bucket: one per stack (the droplet's name), so stacks can
    share a bucket, and a new droplet of the same stack finds the old one's backups."""
    return _value(stack_env, "BACKUP_REPO_PATH") or f"/{settings.droplet_name}"


def location(settings: BackupChoice, stack_env: Mapping[str, Any]) -> str | None:
    """Where the backups are kept off the droplet, for listings (destroy keeps them); None when
    they are on the droplet itself (they go with it)."""
    if not off_droplet(stack_env):
        return None
    where = _value(stack_env, "SPACES_ENDPOINT") or _value(stack_env, "SPACES_REGION")
    return f"s3://{_value(stack_env, 'SPACES_BUCKET')}{repo_path(settings, stack_env)} ({where})"


def stack_values(settings: BackupChoice, stack_env: Mapping[str, Any]) -> dict[str, str]:
    """Stack variables the deployer sets for the postgres service's pgBackRest."""
    return {"BACKUP_REPO_PATH": repo_path(settings, stack_env),
            "SPACES_CA_FILE": TEST_CA_CONTAINER_PATH if settings.spaces_test_ca_root else ""}


def release_overlay(settings: BackupChoice) -> dict[str, bytes]:
    """The test endpoint's CA certificate, when one is set; nothing for DigitalOcean Spaces."""
    if not settings.spaces_test_ca_root:
        return {}
    return {TEST_CA_RELEASE_PATH: Path(settings.spaces_test_ca_root).expanduser().read_bytes()}


def validate(settings: BackupChoice, stack_env: Mapping[str, Any], where: str) -> None:
    """A bucket needs its keys, a region or endpoint, and a cipher pass (the repository leaves
    the droplet, so it is encrypted); a test CA must be a readable PEM file."""
    root = settings.spaces_test_ca_root
    if root:
        path = Path(root).expanduser()
        fix = "set SPACES_TEST_CA_ROOT to the PEM file of the CA that signs the S3 endpoint (`inv lab.env` prints the lab's)"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError("SPACES_TEST_CA_ROOT", f"= {path} cannot be read ({exc.strerror})", fix) from None
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ConfigError("SPACES_TEST_CA_ROOT", f"= {path} holds no PEM certificate", fix)
    if not off_droplet(stack_env):
        return
    for name, fix in (("SPACES_KEY", f"create a Spaces access key ({SPACES_DOCS}) and set SPACES_KEY and SPACES_SECRET in {where}"),
                      ("SPACES_SECRET", f"set SPACES_SECRET, the secret shown once with the Spaces access key, in {where}"),
                      ("BACKUP_CIPHER_PASS", f"generate one with: {_CIPHER_COMMAND}; set BACKUP_CIPHER_PASS in {where} "
                                             "and keep a copy outside the droplet: without it no backup can be read")):
        if not _value(stack_env, name):
            raise ConfigError(name, "is empty while SPACES_BUCKET is set (backups go to that bucket)", fix)
    if not _value(stack_env, "SPACES_REGION") and not _value(stack_env, "SPACES_ENDPOINT"):
        raise ConfigError("SPACES_REGION", "is empty while SPACES_BUCKET is set",
                          f"set SPACES_REGION to the bucket's region (e.g. nyc3, ams3, sgp1) in {where}")
