"""The one error type an operator sees, and the exit codes it maps to (documented in the README).

A leaf module: the cloud adapter, the droplet side and the checks all raise subclasses of
OperatorError with their hint where the fault is known, so nothing translates errors later.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_TOKEN_REJECTED = 3
EXIT_PARTIAL = 4
EXIT_LOCKED = 5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class OperatorError(Exception):
    """An expected failure: what happened (``message``) and what to do (``hint``).

    ``exit_code`` and ``outcome`` say how the run ends; subclasses set class defaults.
    """

    exit_code = EXIT_FAILED
    outcome = "failed"

    def __init__(self, message: str, hint: str = "", *, exit_code: int | None = None,
                 outcome: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code
        if outcome is not None:
            self.outcome = outcome

    def __str__(self) -> str:
        return format_error(self.message, self.hint)


def format_error(message: str, hint: str) -> str:
    """The one message format: the problem, then an indented fix line."""
    return f"{message}\n  fix: {hint}" if hint else message


class ConfigError(OperatorError):
    """A setting is missing or invalid. Names the setting and the fix."""

    exit_code = EXIT_CONFIG
    outcome = "config-error"

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"{key} {problem}", fix)
        self.key = key


class Terminated(BaseException):
    """Raised from the SIGTERM handler so every finally-block (Run.finish, lock release) runs."""
