"""`inv logs`: the services' logs from the leader (every node's, on a swarm), interleaved in time,
redacted, optionally filtered and followed.

The run folder records what was asked and how it ended, never the lines: they are on the
terminal, the containers keep them (`docker logs`), and a follow may run for days.
"""
from __future__ import annotations

import re
import sys
from typing import Sequence, TextIO

from core.errors import OperatorError
from deploy.flows import live
from deploy.flows.live import UsageError
from deploy.logview import Flusher, LogView
from deploy.report.run import Run
from deploy.settings import Settings
from deploy.wiring import REAL_EDGES, Edges
from remote.host import Host, Result
from remote.logs import LogRequest

DEFAULT_TAIL = 100          # lines per container when neither --tail nor --since is given
# docker's --since: a duration (10m, 1h30m, 45s), a date or time (RFC 3339), or Unix seconds
_SINCE = re.compile(r"^(?:(?:\d+(?:\.\d+)?(?:h|m|s|ms))+|\d{4}-\d\d-\d\d(?:T[\d:.]+(?:Z|[+-]\d\d:\d\d)?)?|\d+(?:\.\d+)?)$")


def check_options(since: str | None, tail: int | str | None, grep: str | None) -> tuple[int | None, re.Pattern[str] | None]:
    """--since, --tail and --grep as docker and Python read them; anything else is a usage error."""
    if since is not None and not _SINCE.match(since):
        raise UsageError(f"--since {since!r} is not a duration or a time",
                         "write a duration (10m, 2h, 1h30m) or a UTC time (2026-12-06T13:00:00Z)")
    count: int | None = None
    if tail is not None:
        if not str(tail).isdigit():
            raise UsageError(f"--tail {tail!r} is not a whole number of lines", "write e.g. --tail 200")
        count = int(tail)
    try:
        pattern = re.compile(grep) if grep else None
    except re.error as exc:
        raise UsageError(f"--grep {grep!r} is not a regular expression ({exc})",
                         "write a Python regular expression, e.g. --grep 'ERROR|Traceback'") from None
    return count, pattern


def logs(run: Run, settings: Settings, edges: Edges = REAL_EDGES, services: Sequence[str] = (), follow: bool = False,
         since: str | None = None, tail: int | str | None = None, grep: str | None = None,
         out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the logs; the number of lines shown. A service named must have a running container;
    with none named, every service that has a container (a stopped one's last lines too)."""
    out, err = out or sys.stdout, err or sys.stderr
    named = live.require_services(settings, services)
    count, pattern = check_options(since, tail, grep)
    if count is None and since is None:
        count = DEFAULT_TAIL
    with live.reached(run, settings, edges) as (_cluster, runtime, inventory):
        leader = inventory.targets[0]
        snap = live.snapshot(run, runtime, leader)
        for name in named:
            live.running_container(snap, name, leader.name)
        chosen = named or [s.name for s in snap.services if s.replicas]
        if not chosen:
            raise UsageError("no service of the stack has a container: there are no logs to read",
                             "`inv status` shows what runs; `inv deploy` puts a release live")
        request = LogRequest(tuple(chosen), follow=follow, since=since, tail=count)
        run.record("logs", {"services": chosen, "follow": follow, "since": since, "tail": count, "grep": grep,
                            "nodes": [t.name for t in inventory]})
        view = LogView(settings.project, chosen, out, err, run.registry, pattern, color=_is_terminal(out))
        with run.step("logs") as step:
            result = _read(leader, runtime.logs_command(leader, request), view, follow)
            step.note(f"{view.shown} lines" + (" (followed until Ctrl-C)" if result is None else ""))
    if result is not None and not result.ok:
        raise OperatorError(f"reading the logs on {leader.name} failed: {result.tail()}",
                            "`inv status` shows whether Docker answers on the droplet")
    return view.shown


def _read(leader: Host, command: str, view: LogView, follow: bool) -> Result | None:
    """The command's lines into the view; None when a follow was ended with Ctrl-C (its only end)."""
    if not follow:
        result = leader.stream(command, view.feed, "reading the logs")
        view.flush(everything=True)
        return result
    with Flusher(view):
        try:
            return leader.stream(command, view.feed, "following the logs", pty=True)
        except KeyboardInterrupt:
            return None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
