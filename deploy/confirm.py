"""The typed-name confirmation that guards what cannot be undone by a deploy (a restore, a
destroy): the operator types the droplet's name, or passes --yes; with no terminal to ask on
and no --yes, nothing is changed."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from core.errors import EXIT_CONFIG, OperatorError


class NotConfirmed(OperatorError):
    exit_code = EXIT_CONFIG
    outcome = "not-confirmed"


def typed_name(expected: str, action: str, yes: bool, *, stdin: TextIO | None = None,
               ask: Callable[[str], str] = input) -> None:
    """Return when confirmed; NotConfirmed (exit 2, nothing changed) otherwise."""
    if yes:
        return
    stream = stdin if stdin is not None else sys.stdin
    if stream is None or not stream.isatty():
        raise NotConfirmed(f"{action} needs the droplet's name typed, and there is no terminal to ask on; nothing was changed",
                           "run it in a terminal, or add --yes to confirm without asking")
    try:
        answer = ask(f"Type the droplet's name ({expected}) to {action}: ")
    except EOFError:
        answer = ""
    if answer.strip() != expected:
        raise NotConfirmed(f"the name typed is not {expected!r}; nothing was changed",
                           f"type {expected} exactly to {action}, or add --yes")
