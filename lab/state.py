"""The lab's state folder (./.lab by default, ignored by git): one JSON file plus the
operator keypair, all private to the user."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


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
