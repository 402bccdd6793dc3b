"""Entry point for `python -m lab.fake_do --backend-factory lab.droplets.factory:from_env`."""
from __future__ import annotations

import sys

from lab import config
from lab.droplets.backend import ContainerBackend


def from_env() -> ContainerBackend:
    """A ContainerBackend configured from the LAB_* variables `inv lab.up` passes down."""
    return ContainerBackend(config.load(), log=lambda msg: print(msg, file=sys.stderr, flush=True))
