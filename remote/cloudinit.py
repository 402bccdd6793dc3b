"""Wait for cloud-init on a new droplet: SSH answers long before it has installed Docker.

Bounded, with progress (the stage cloud-init is in), and cloud-init's own errors reported
when it finished with some, so a first deploy of a brand-new droplet needs no rerun.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

from remote import commands as cmd
from remote.errors import RemoteError
from remote.host import Host

REBUILD_HINT = ("read /var/log/cloud-init.log and /var/log/cloud-init-output.log on the droplet "
                "(DigitalOcean console), fix the cause (user data: deploy/cloud/user_data.py), "
                "then destroy the droplet and run `inv deploy` again: cloud-init runs once per droplet")


class CloudInitFailed(RemoteError):
    """cloud-init ended with errors, or did not end in time."""


@dataclass(frozen=True)
class CloudInitState:
    state: str                              # done | running | absent
    stage: str | None = None                # while running: e.g. modules-final
    errors: tuple[str, ...] = field(default=())


def parse_state(text: str) -> CloudInitState:
    head, _, body = text.strip().partition("\n")
    state = head.removeprefix("state:").strip()
    if state not in ("done", "running", "absent"):
        raise CloudInitFailed(f"unexpected answer to the cloud-init probe: {head[:80]!r}",
                              "check that the droplet runs a Linux image with a POSIX shell")
    try:
        v1 = (json.loads(body) if body.strip() else {}).get("v1") or {}
    except ValueError:
        v1 = {}   # status.json half-written while we read it: the next poll reads it whole
    errors = [str(e) for e in v1.get("errors") or []]
    for stage in v1.values():   # status.json: errors are per stage
        if isinstance(stage, dict):
            errors += [str(e) for e in stage.get("errors") or []]
    return CloudInitState(state, v1.get("stage") if state == "running" else None, tuple(errors))


def wait(target: Host, timeout: float, on_progress: Callable[[str], None] = lambda _: None,
         interval: float = 2.0, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> CloudInitState:
    """Until cloud-init has finished (or the droplet has none). Raises CloudInitFailed with
    cloud-init's errors, or when ``timeout`` seconds pass first."""
    start, last = clock(), None
    while True:
        st = parse_state(target.run(cmd.cloud_init_state(), "asking cloud-init how far it is").stdout)
        if st.state == "done" and st.errors:
            raise CloudInitFailed(f"cloud-init finished with {len(st.errors)} error(s) on {target.host}: "
                                  + "; ".join(e[:300] for e in st.errors), REBUILD_HINT)
        if st.state != "running":
            return st
        elapsed = clock() - start
        seen = st.stage or "starting"
        if seen != last:
            on_progress(f"cloud-init: {seen} ({elapsed:.0f}s)")
            last = seen
        if elapsed >= timeout:
            raise CloudInitFailed(
                f"cloud-init was still running ({seen}) on {target.host} after {timeout:.0f}s",
                "raise CLOUD_INIT_TIMEOUT if the droplet is just slow (package installs), or read "
                "/var/log/cloud-init-output.log on the droplet to see where it hangs")
        sleep(interval)
