"""The droplet side's error base: an OperatorError, so a message and a fix reach the operator as is."""
from __future__ import annotations

from core.errors import OperatorError


class RemoteError(OperatorError):
    """Base of SshError, RemoteCommandError, ReleaseError, LockError and ComposeError."""
