"""Errors an operator sees, and the exit codes they map to (documented in the README)."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_TOKEN_REJECTED = 3
EXIT_PARTIAL = 4
EXIT_LOCKED = 5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class DeployError(Exception):
    """An expected failure: a message for the operator and a hint that says what to do."""

    exit_code = EXIT_FAILED
    outcome = "failed"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.hint}" if self.hint else self.message


class ConfigError(DeployError):
    """A setting is missing or invalid. Names the setting and the fix."""

    exit_code = EXIT_CONFIG
    outcome = "config-error"

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"{key} {problem}", fix)
        self.key = key


class TokenRejected(DeployError):
    exit_code = EXIT_TOKEN_REJECTED
    outcome = "config-error"


class LockHeldError(DeployError):
    """Another deploy holds the droplet's deploy lock."""

    exit_code = EXIT_LOCKED


class Terminated(BaseException):
    """Raised from the SIGTERM handler so every finally-block (Run.finish, lock release) runs."""


def operator_error(exc: BaseException) -> DeployError | None:
    """The adapters' errors (deploy.cloud.CloudError, remote.errors.RemoteError) carry a message
    and a hint for the operator: report them as a DeployError, without a traceback. None for
    anything else (an unexpected error keeps its traceback in the run folder)."""
    from deploy.cloud import CloudError, TokenRejected as CloudTokenRejected
    from remote.errors import RemoteError

    if isinstance(exc, DeployError):
        return exc
    if isinstance(exc, CloudTokenRejected):
        return TokenRejected(exc.message, exc.hint or "create a new token with read and write scope")
    if isinstance(exc, (CloudError, RemoteError)):
        return DeployError(exc.message, exc.hint)
    return None

