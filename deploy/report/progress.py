"""Live progress of the long steps: which service is building, starting, healthy.

On a terminal a rich Live display shows the running step with its elapsed time and the state of
each service, redrawn in place and gone when the step ends (the step's own end line stays).
Anywhere else (CI logs, pipes) each state change is one plain timestamped line and nothing else.
Either way every change is kept in run.log.

Progress never fails a run: a poll or a redraw that raises ends that watcher (or the display)
with one line saying so, and the deploy goes on.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Mapping

from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table

POLL_INTERVAL = 2.0      # seconds between polls of the droplet while a step runs
STOP_WAIT = 5.0          # how long a step's end waits for a poll in flight (a late one is dropped)

Poll = Callable[[], Mapping[str, str]]            # item -> its state now
Report = Callable[[str, str], None]               # (item, state) on each change
_STYLE = {"healthy": "green", "built": "green", "running": "green", "unhealthy": "red", "exited": "red",
          "dead": "red", "restarting": "red", "starting": "yellow", "building": "yellow", "created": "yellow"}


class Watcher:
    """Polls now, then every ``interval`` seconds in a thread, and reports each item whose state
    changed. ``stop()`` polls once more, so the last change before a step ends is not missed."""

    def __init__(self, poll: Poll, report: Report, interval: float, on_error: Callable[[str], None]) -> None:
        self._poll, self._report, self._interval, self._on_error = poll, report, interval, on_error
        self._last: dict[str, str] = {}
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._loop, name="progress-watcher", daemon=True)

    def start(self) -> "Watcher":
        if self._once(in_thread=False):
            self._thread.start()
        return self

    def _once(self, in_thread: bool) -> bool:
        try:
            states = dict(self._poll())
        except Exception as exc:  # noqa: BLE001 - progress is a nicety: it must never fail the deploy
            self._failed = True
            if not (in_thread and self._stop.is_set()):   # after its step ended nobody needs to know
                # one line: an operator error's str() goes on with its fix, which is the step's business
                self._on_error(f"{type(exc).__name__}: {getattr(exc, 'message', None) or (str(exc).splitlines() or [''])[0]}")
            return False
        if in_thread and self._stop.is_set():
            return False           # the step ended while this poll was in flight: too late to report
        for item, state in states.items():
            if self._last.get(item) != state:
                self._last[item] = state
                self._report(item, state)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self._interval) and self._once(in_thread=True):
            pass

    def stop(self) -> None:
        """Idempotent. The final poll is skipped when a poll is still hanging (never two at once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT)
        if not self._failed and not self._thread.is_alive():
            self._once(in_thread=False)


class Progress:
    """The item states of the running step, shown live on a terminal or as plain lines elsewhere.

    ``log`` prints a timestamped line and keeps it in run.log; ``record`` only keeps it in run.log
    (on a terminal the live display is what the operator reads)."""

    def __init__(self, console: Console, log: Callable[[str], None], record: Callable[[str], None]) -> None:
        self.console = console
        self._log, self._record = log, record
        self._lock = threading.RLock()
        self._states: dict[tuple[str, str], tuple[str, float]] = {}
        self._watchers: dict[str, list[Watcher]] = {}
        self._live: Live | None = None
        self._live_step: tuple[str, float] | None = None
        self._spinner = Spinner("dots")
        self._live_broken = False

    @property
    def live(self) -> bool:
        return self.console.is_terminal and not self._live_broken

    def begin(self, step: str) -> None:
        """A step started: on a terminal, show it with its elapsed time until it ends."""
        if not self.live or self._live is not None:
            return
        self._live_step = (step, time.monotonic())
        try:
            self._live = Live(self, console=self.console, transient=True, refresh_per_second=4,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        except Exception as exc:  # noqa: BLE001 - a display fault must not stop the deploy
            self._give_up_live(exc)

    def update(self, step: str, item: str, state: str) -> None:
        """``item`` (a service) is now in ``state``; a repeated state is not reported again."""
        with self._lock:
            if self._states.get((step, item), ("",))[0] == state:
                return
            self._states[(step, item)] = (state, time.monotonic())
        line = f"[{step}] {item}: {state}"
        if not self.live:
            self._log(line)
            return
        self._record(line)
        if self._live is not None:
            try:
                self._live.refresh()
            except Exception as exc:  # noqa: BLE001
                self._give_up_live(exc)

    def watch(self, step: str, poll: Poll, interval: float | None = None) -> Watcher:
        """Start polling for ``step``; the watcher stops when the step ends (or when stopped)."""
        watcher = Watcher(poll, lambda item, state: self.update(step, item, state),
                          POLL_INTERVAL if interval is None else interval,
                          lambda why: self._log(f"[{step}] progress unavailable ({why}); the step goes on"))
        with self._lock:
            self._watchers.setdefault(step, []).append(watcher)
        return watcher.start()

    def end(self, step: str) -> None:
        """The step ended: its watchers report their last changes, then the display goes."""
        with self._lock:
            watchers = self._watchers.pop(step, [])
        for watcher in watchers:
            watcher.stop()
        with self._lock:
            self._states = {key: value for key, value in self._states.items() if key[0] != step}
        if self._live is not None and self._live_step and self._live_step[0] == step:
            live, self._live, self._live_step = self._live, None, None
            try:
                live.stop()
            except Exception as exc:  # noqa: BLE001
                self._give_up_live(exc)

    def _give_up_live(self, exc: Exception) -> None:
        self._live_broken = True
        self._live = None
        self._log(f"live progress display turned off ({type(exc).__name__}: {exc}); plain lines follow")

    def __rich__(self) -> RenderableType:
        with self._lock:
            step = self._live_step
            rows = [(item, state, since) for (s, item), (state, since) in self._states.items()
                    if step and s == step[0]]
        now = time.monotonic()
        grid = Table.grid(padding=(0, 2))
        if step:
            grid.add_row(self._spinner, f"[bold]{step[0]}[/bold]", f"{now - step[1]:.0f}s")
        for item, state, since in rows:
            style = _STYLE.get(state, "default")
            grid.add_row("", escape(item), f"[{style}]{escape(state)}[/{style}] {now - since:.0f}s")
        return grid
