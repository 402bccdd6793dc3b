"""The lab's state folder (./.lab by default, ignored by git): one JSON file plus the
operator keypair, all private to the user."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
INSTANCE_FILE = "instance"


def ensure_dir(state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    return state_dir


def write_private(path: Path, text: str) -> None:
    """Create with 0600 from the start: the token and keys never exist world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def instance(state_dir: Path) -> str:
    """A random id made once per state folder: service containers carry it (in their spec), so
    one started for a folder that was since removed (its bind mounts point at deleted files) is
    told apart from one started for this folder, even at the same path. Safe to race: the first
    writer wins, everyone reads its id."""
    path = ensure_dir(state_dir) / INSTANCE_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{INSTANCE_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    tmp.write_text(secrets.token_hex(16) + "\n")
    try:
        os.link(tmp, path)            # atomic, and refuses to replace an id another writer made
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def read(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write(state_dir: Path, data: dict[str, Any]) -> None:
    write_private(ensure_dir(state_dir) / STATE_FILE, json.dumps(data, indent=2, sort_keys=True))


def ensure_keypair(state_dir: Path) -> Path:
    """An ed25519 keypair for the operator (OpenSSH format); reused when present."""
    key = ensure_dir(state_dir) / "id_ed25519"
    if key.exists() and key.with_suffix(".pub").exists():
        return key.resolve()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    private = Ed25519PrivateKey.generate()
    write_private(key, private.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.OpenSSH,
                                             serialization.NoEncryption()).decode())
    pub = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH).decode()
    key.with_suffix(".pub").write_text(pub + " stackdeploy-lab\n")
    return key.resolve()
