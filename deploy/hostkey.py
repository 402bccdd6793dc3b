"""The droplet's SSH host key, made here so the first SSH contact needs no trust on first use.

The deployer generates an ed25519 host key, hands it to the new droplet through cloud-init
(`ssh_keys:`), and pins its public half in SSH_KNOWN_HOSTS before it ever connects. The
private half is a secret: registered with the redactor at birth, kept only in a 0600 file
beside the known_hosts file (so a run interrupted between create and pin can still pin).
"""
from __future__ import annotations

import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterable, Iterator, Sequence

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.errors import OperatorError
from deploy.redact import REGISTRY, SecretRegistry

KEY_TYPE = "ssh-ed25519"


@dataclass(frozen=True)
class HostKey:
    public: str                                   # "ssh-ed25519 AAAA..." (no comment)
    private: str = field(repr=False)              # OpenSSH PEM; never printed

    @property
    def base64(self) -> str:
        return self.public.split()[1]


def generate(registry: SecretRegistry = REGISTRY) -> HostKey:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    registry.add_value(private)
    return HostKey(public=public, private=private)


def key_file(known_hosts: Path, droplet_name: str) -> Path:
    """Where the host key of droplet ``droplet_name`` is kept (beside the known_hosts file)."""
    return known_hosts.parent / "host_keys" / f"{droplet_name}_ed25519"


def _write_owner_only(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A temp name of its own: two runs on this machine may write the same file at once.
    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)   # whatever the umask left
        fh.write(text)
    os.replace(tmp, path)


def _pending(path: Path) -> Path:
    return path.with_name(path.name + ".pending")


def save_pending(key: HostKey, known_hosts: Path, droplet_name: str) -> None:
    """Keep the key (mode 0600) before the create call; it becomes the droplet's key in
    promote() once the droplet is created, and is dropped when a droplet was only found."""
    path = key_file(known_hosts, droplet_name)
    _write_owner_only(_pending(path), key.private)
    _write_owner_only(_pending(path.with_name(path.name + ".pub")), key.public + "\n")


def promote(known_hosts: Path, droplet_name: str) -> None:
    path = key_file(known_hosts, droplet_name)
    for p in (path, path.with_name(path.name + ".pub")):
        if _pending(p).exists():
            os.replace(_pending(p), p)


def drop_pending(known_hosts: Path, droplet_name: str) -> None:
    path = key_file(known_hosts, droplet_name)
    for p in (path, path.with_name(path.name + ".pub")):
        _pending(p).unlink(missing_ok=True)


def load_public(known_hosts: Path, droplet_name: str) -> str | None:
    pub = key_file(known_hosts, droplet_name).with_name(f"{droplet_name}_ed25519.pub")
    try:
        text = pub.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return text if text.startswith(KEY_TYPE + " ") else None


def pin(known_hosts: Path, host_entry: str, public: str) -> None:
    """Make ``public`` the only key known for ``host_entry``: a new droplet may reuse an old
    droplet's address, and the key we generated is the one its sshd will show."""
    keys = paramiko.HostKeys()
    if known_hosts.exists():
        keys.load(str(known_hosts))
    lines = [f"{name} {kind} {key.get_base64()}"
             for name, entry in keys.items() if name != host_entry for kind, key in entry.items()]
    kind, b64 = public.split()[:2]
    lines.append(f"{host_entry} {kind} {b64}")
    _write_owner_only(known_hosts, "\n".join(lines) + "\n")


def is_pinned(known_hosts: Path, host_entry: str) -> bool:
    if not known_hosts.exists():
        return False
    keys = paramiko.HostKeys()
    try:
        keys.load(str(known_hosts))
    except (OSError, paramiko.SSHException):
        return False
    return keys.lookup(host_entry) is not None


@contextmanager
def pending(known_hosts: Path, names: Sequence[str], registry: SecretRegistry = REGISTRY) -> Iterator[dict[str, HostKey]]:
    """A new host key per droplet name for the block that creates them, each kept beside
    known_hosts before the create call (a run interrupted between create and pin can still pin
    it next time: promote() it once the droplet exists); what was not promoted is dropped after."""
    keys = {name: generate(registry) for name in names}
    try:
        for name, key in keys.items():
            save_pending(key, known_hosts, name)
    except OSError as exc:
        raise OperatorError(f"cannot keep the new droplets' SSH host keys beside {known_hosts} "
                            f"({exc.strerror or type(exc).__name__})",
                            "point SSH_KNOWN_HOSTS to a file in a folder this user can write") from None
    try:
        yield keys
    finally:
        for name in names:
            drop_pending(known_hosts, name)


# --- forgetting a stack's droplets (`inv destroy`) -------------------------------------------
def kept_names(known_hosts: Path, droplet_name: str) -> list[str]:
    """The nodes of the stack named ``droplet_name`` whose host key is kept here: the name itself
    and <name>-<k> (another stack may be called so: the caller tells them apart)."""
    folder = key_file(known_hosts, droplet_name).parent
    numbered = re.compile(rf"^{re.escape(droplet_name)}(-[1-9][0-9]*)?_ed25519\.pub$")
    found = [p.name[: -len("_ed25519.pub")] for p in folder.glob("*_ed25519.pub") if numbered.match(p.name)]
    return sorted(found, key=lambda n: (len(n), n))


def _pins(known_hosts: Path) -> list[tuple[list[str], str]]:
    """(host names, key base64) of every plain line of the file."""
    try:
        text = known_hosts.read_text(encoding="utf-8")
    except OSError:
        return []
    fields = (line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", "@")))
    return [(f[0].split(","), f[2]) for f in fields if len(f) >= 3]


def _kept_keys(known_hosts: Path, names: Iterable[str]) -> set[str]:
    """The base64 of the host keys kept here for ``names``."""
    return {public.split()[1] for public in (load_public(known_hosts, n) for n in names) if public}


def pinned_with(known_hosts: Path, names: Iterable[str]) -> list[str]:
    """The known_hosts entries pinned with the host key kept for one of ``names``: where those
    droplets were (an address outlives its droplet here; DNS may still point at it)."""
    keys = _kept_keys(known_hosts, names)
    return sorted({host for hosts, key in _pins(known_hosts) if key in keys for host in hosts})


def forget(known_hosts: Path, entries: Collection[str], names: Collection[str]) -> list[str]:
    """Unpin ``entries`` (host names as known_hosts writes them), and every pin of the host key
    kept for one of ``names``, then delete those kept keys. Every other line stays as it was: the
    file may be shared with other stacks. Returns what was removed, for the listing."""
    keys = _kept_keys(known_hosts, names)
    removed: list[str] = []
    try:
        lines = known_hosts.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) < 3 or line.lstrip().startswith(("#", "@")):
            out.append(line)
            continue
        hosts = fields[0].split(",")
        gone = hosts if fields[2] in keys else [h for h in hosts if h in entries]
        removed += [f"known_hosts {h}" for h in gone]
        stay = [h for h in hosts if h not in gone]
        if stay:
            out.append(line if not gone else " ".join([",".join(stay), *fields[1:]]))
    if len(out) != len(lines) or removed:
        _write_owner_only(known_hosts, "".join(f"{line}\n" for line in out))
    for name in names:
        path = key_file(known_hosts, name)
        for p in (path, path.with_name(path.name + ".pub"), _pending(path), _pending(path.with_name(path.name + ".pub"))):
            if p.exists():
                p.unlink()
                removed.append(f"host key file {p}")
    return removed
