"""The one error shape of the droplet side: what failed (``message``) and how to fix it (``hint``)."""
from __future__ import annotations


class RemoteError(Exception):
    """Base of SshError, ReleaseError, LockError and ComposeError: catch this in the pipeline."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(f"{message}\n  fix: {hint}" if hint else message)
        self.message = message
        self.hint = hint
