"""Our SSH public key in the DigitalOcean account: found by its fingerprint, registered once,
replaced by a new one (`inv rotate-ssh-key`)."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import digitalocean

from deploy.cloud.api import CloudError, CloudSpec, OnEvent, _call, _library_env, _log_event


def ssh_fingerprint(public_key: str) -> str:
    """DigitalOcean's key fingerprint (MD5 of the key blob, colon hex)."""
    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, ValueError):
        raise CloudError("the SSH public key is not an OpenSSH public key line",
                         "point SSH_KEY_PATH at a key pair whose .pub file reads "
                         "'ssh-ed25519 AAAA... comment'") from None
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 - DO's identifier, not security
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def _lookup_ssh_key(spec: CloudSpec, on_event: OnEvent) -> Any | None:
    """The account's key with our public key's fingerprint (a GET), or None."""
    def load() -> Any:
        key = digitalocean.SSHKey(token=spec.token, fingerprint=ssh_fingerprint(spec.ssh_public_key))
        key.load()
        return key
    return _call(spec, "looking up the SSH key", load, on_event, missing_ok=True)


def _find_ssh_key(spec: CloudSpec, on_event: OnEvent) -> int | None:
    found = _lookup_ssh_key(spec, on_event)
    return int(found.id) if found is not None else None


def _ensure_ssh_key(spec: CloudSpec, on_event: OnEvent) -> tuple[int, bool]:
    fingerprint = ssh_fingerprint(spec.ssh_public_key)

    def lookup() -> Any | None:
        return _lookup_ssh_key(spec, on_event)

    found = lookup()
    if found is not None:
        return int(found.id), False
    new = digitalocean.SSHKey(token=spec.token, name=spec.ssh_key_name,
                              public_key=spec.ssh_public_key.strip())

    def create() -> Any:
        new.create()
        return new
    try:
        # After a lost answer the key may be registered already: look before posting again.
        made = _call(spec, "registering the SSH key", create, on_event, before_retry=lookup)
    except CloudError:
        made = lookup()  # refused as "already in use": a concurrent run registered it first
        if made is None:
            raise
        return int(made.id), False
    on_event("info", f"registered SSH key {spec.ssh_key_name!r} ({fingerprint})")
    return int(made.id), True


@dataclass(frozen=True)
class KeyChange:
    """What `inv rotate-ssh-key` changed in the account: the new key registered (False: it was
    already), the old one removed (False: absent, or kept for ``kept``)."""
    registered: bool
    removed: bool
    kept: str | None = None


def replace_ssh_key(spec: CloudSpec, new_public_key: str, on_event: OnEvent = _log_event) -> KeyChange:
    """The new key in the account before the old one (``spec.ssh_public_key``) leaves it, so a
    droplet created at any moment gets a key that opens it. The old key is removed only when a
    deploy registered it (under ``spec.ssh_key_name``); droplets that exist keep their keys."""
    with _library_env(spec):
        return _replace(spec, new_public_key, on_event)


def _replace(spec: CloudSpec, new_public_key: str, on_event: OnEvent) -> KeyChange:
    _, registered = _ensure_ssh_key(dataclasses.replace(spec, ssh_public_key=new_public_key), on_event)
    old = _lookup_ssh_key(spec, on_event)
    if old is None:
        return KeyChange(registered, removed=False)
    if old.name != spec.ssh_key_name:
        return KeyChange(registered, removed=False,
                         kept=f"the old key is registered as {old.name!r}, not by a deploy ({spec.ssh_key_name}): "
                              "remove it in the control panel if nothing else uses it")
    _call(spec, "removing the old SSH key", old.destroy, on_event, missing_ok=True)
    on_event("info", f"removed the old SSH key {old.name!r} ({ssh_fingerprint(spec.ssh_public_key)})")
    return KeyChange(registered, removed=True)
