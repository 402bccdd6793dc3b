"""The deploy user's ~/.ssh/authorized_keys on a droplet: a key added, a key removed.

A key is matched by its blob (the base64 field), whatever its comment or options on the line,
and removing one is refused unless the key that stays is there: a command from here never
leaves the droplet without a key that opens it.
"""
from __future__ import annotations

from remote.commands import q

FILE = '"$HOME/.ssh/authorized_keys"'
_HAS = "awk -v b={blob} '{{for (i = 1; i <= NF; i++) if ($i == b) f = 1}} END {{exit !f}}' {file}"


def blob(public_key: str) -> str:
    """The key itself, without its type and comment (an OpenSSH public key line's 2nd field)."""
    fields = public_key.split()
    if len(fields) < 2:
        raise ValueError("not an OpenSSH public key line")
    return fields[1]


def authorized(public_key: str) -> str:
    """Exit 0 when ``public_key`` is authorized."""
    return _HAS.format(blob=q(blob(public_key)), file=FILE)


def authorize(public_key: str) -> str:
    """``public_key`` among the authorized keys (once, however often this runs)."""
    line = q(public_key.strip())
    return (f'umask 077; mkdir -p "$HOME/.ssh" && touch {FILE} && chmod 0600 {FILE} && '
            f'{{ {authorized(public_key)} || printf "%s\\n" {line} >> {FILE}; }}')


def revoke(public_key: str, keep: str) -> str:
    """``public_key`` no longer authorized; refused (exit 1) when ``keep`` is not authorized."""
    return (f'{authorized(keep)} || {{ echo "the new key is not authorized: the old one stays" >&2; exit 1; }}; '
            f'tmp="$HOME/.ssh/authorized_keys.tmp.$$"; '
            f"awk -v b={q(blob(public_key))} '{{for (i = 1; i <= NF; i++) if ($i == b) next; print}}' {FILE} "
            f'> "$tmp" && chmod 0600 "$tmp" && mv -f "$tmp" {FILE}')
