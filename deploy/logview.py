"""Log lines from the leader on their way to the terminal: parsed, passed through the project's
one redactor (a secret a service prints never shows), filtered with --grep, interleaved in time
across services, prefixed with their service (and node, on a swarm), coloured on a terminal only.

Interleaving: Compose and `docker service logs` print each container's lines in order, but not
the containers' in time with each other (a backlog comes container by container). Lines are held
``hold`` seconds after they arrive and let out in timestamp order; without --follow, all at the
end. Nothing else is kept: a follow running for days holds a fraction of a second of lines.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence, TextIO

from deploy.redact import SecretRegistry, redact
from remote.logs import LogLine, parse_line

HOLD_S = 0.4          # a followed line waits this long for an earlier one from another container
FLUSH_EVERY_S = 0.1
_COLOURS = ("36", "33", "32", "35", "34", "91", "96", "93", "92", "95")


@dataclass(order=True)
class _Held:
    time: str
    seq: int
    arrived: float = field(compare=False)
    line: LogLine = field(compare=False)


class LogView:
    def __init__(self, project: str, services: Sequence[str], out: TextIO, err: TextIO, registry: SecretRegistry,
                 grep: re.Pattern[str] | None = None, color: bool = False, hold: float = HOLD_S) -> None:
        self._project, self._services = project, list(services)
        self._out, self._err, self._registry = out, err, registry
        self._grep, self._color, self._hold = grep, color, hold
        self._held: list[_Held] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._width = max((len(s) for s in services), default=0)
        self.shown = 0

    def feed(self, raw: str) -> None:
        """One line of the logs command's output (from the reader, in its thread)."""
        line = parse_line(raw, self._project, self._services)
        if line is None:          # docker's own words (an error): at once, to stderr, redacted all the same
            if raw.strip():
                self._err.write(redact(raw, self._registry) + "\n")
                self._err.flush()
            return
        with self._lock:
            self._seq += 1
            self._held.append(_Held(line.time, self._seq, time.monotonic(), line))

    def flush(self, everything: bool = False) -> None:
        """Let out, in time order, the lines held long enough (``everything``: all of them)."""
        cutoff = time.monotonic() - self._hold
        with self._lock:
            ready = [h for h in self._held if everything or h.arrived <= cutoff]
            self._held = [h for h in self._held if not (everything or h.arrived <= cutoff)]
        for held in sorted(ready):
            self._show(held.line)

    def _show(self, line: LogLine) -> None:
        text = redact(line.text, self._registry)
        if self._grep is not None and not self._grep.search(text):   # on the redacted text: no guessing a secret
            return
        source = line.service + (f"@{line.node}" if line.node else "")
        self._width = max(self._width, len(source))
        prefix = source.ljust(self._width)
        if self._color:
            index = self._services.index(line.service) if line.service in self._services else len(line.service)
            prefix = f"\x1b[{_COLOURS[index % len(_COLOURS)]}m{prefix}\x1b[0m"
        self._out.write(f"{line.time[:19]}Z {prefix} | {text}\n")
        self._out.flush()
        self.shown += 1


class Flusher:
    """While a follow runs: let held lines out every FLUSH_EVERY_S, in a thread of its own."""

    def __init__(self, view: LogView) -> None:
        self._view = view
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="log-flusher", daemon=True)

    def __enter__(self) -> "Flusher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._view.flush(everything=True)

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_EVERY_S):
            self._view.flush()
