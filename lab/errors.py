"""The one error type the lab raises: its message is meant for the operator, not a traceback."""
from __future__ import annotations


class LabError(RuntimeError):
    """Something the operator can fix; the message names the setting or the command to run."""
