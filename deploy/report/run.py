"""Run: one execution of a task. Its folder, its log, its steps, and a manifest that is always
finished, on success, error, Ctrl-C or SIGTERM (Kamal's status footer, as data)."""
from __future__ import annotations

import shutil
import signal
import socket
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from rich.console import Console

from core.errors import EXIT_FAILED, ConfigError, OperatorError, Terminated, format_error
from deploy.report import html, summary
from deploy.report.artifacts import ArtifactError, ArtifactWriter
from deploy.report.progress import Poll, Progress
from deploy.redact import REGISTRY, SecretRegistry, redact

T = TypeVar("T")
OUTCOMES = ("success", "failed", "partial", "config-error", "interrupted")
FIXED_FOLDER = "latest"
# How long a finishing run waits for the work begun beside its main thread (a remote command is
# bounded by about the same).
BESIDE_GRACE_S = 90.0


@dataclass
class Step:
    name: str
    status: str = "ok"  # ok | failed | skipped | warning
    started: str = ""
    seconds: float = 0.0
    message: str = ""
    offset: float = 0.0  # seconds from the run's start (monotonic), for the report's timeline


@dataclass
class StepHandle:
    """What a step body may set: a message, or a warning status."""

    step: Step

    def note(self, message: str) -> None:
        self.step.message = message

    def warn(self, message: str) -> None:
        self.step.status = "warning"
        self.step.message = message


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def new_run_folder(logs_dir: Path, task: str, mode: str, timestamp: bool, now: datetime | None = None) -> Path:
    """local_run_logs/<UTC timestamp>_<task>-<mode>/, unique via exclusive mkdir; or the fixed
    folder (emptied first, so no stale file from an older run is mistaken for this one's)."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    if not timestamp:
        folder = logs_dir / FIXED_FOLDER
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        return folder
    stamp = (now or _utc_now()).strftime("%Y%m%dT%H%M%SZ")
    base = f"{stamp}_{task}-{mode}"
    for n in range(1, 1000):
        folder = logs_dir / (base if n == 1 else f"{base}.{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a unique run folder under {logs_dir}")


class Run:
    def __init__(self, logs_dir: Path, task: str, mode: str, argv: list[str], timestamp: bool = True,
                 console: Console | None = None, registry: SecretRegistry | None = None,
                 quiet: bool = False) -> None:
        self.registry = registry or REGISTRY
        # quiet: the task's own output is what the operator reads (logs, a remote command, a status
        # screen), so the console gets only warnings, the error and the folder of a failed run;
        # run.log keeps every line as usual.
        self.quiet = quiet
        self.started_at = _utc_now()
        self._t0 = time.monotonic()
        self.task = task
        self.mode = mode
        self.folder = new_run_folder(logs_dir, task, mode, timestamp, self.started_at)
        self.id = self.folder.name if timestamp else f"{self.started_at.strftime('%Y%m%dT%H%M%SZ')}_{task}-{mode}"
        self.artifacts = ArtifactWriter(self.folder, self.registry)
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.command = redact(" ".join(argv), self.registry)
        self.steps: list[Step] = []
        self.warnings: list[str] = []
        self.skipped: list[dict[str, str]] = []
        self.checks: list[dict[str, Any]] = []
        self.target: dict[str, Any] = {}
        self.details: dict[str, Any] = {}
        self.outcome: str | None = None
        self.error: str | None = None
        self.exit_code = 0
        self._partial_reasons: list[str] = []
        self._open_steps: list[str] = []            # every thread's, in the order they began
        self._thread = threading.local()             # this thread's open steps; beside()'s signal
        self._checks_lock = threading.Lock()
        self._beside: list[Future[Any]] = []   # work begun beside the main thread (Run.beside)
        # (step, host, command label) -> [count, seconds, longest]: where a run's seconds go
        self._commands: dict[tuple[str, str, str], list[float]] = {}
        self._commands_lock = threading.Lock()
        self._finished = False
        self._previous_sigterm: Any = None
        self.unwritable: ArtifactError | None = None   # the first write into the folder that failed
        self._progress = Progress(self.console, self.log, self._keep)
        self.log(f"run {self.id}: {self.command}")

    @property
    def operator(self) -> str:
        """Who runs this: user@host, recorded in the release history."""
        return operator_name()

    # -- console and run.log -------------------------------------------------------------------
    def log(self, message: str, style: str = "") -> None:
        clean = redact(message, self.registry)
        stamp = _utc_now().strftime("%H:%M:%S")
        if not self.quiet or style:   # a quiet run still shows its warnings and its error
            self.console.print(f"[dim]{stamp}[/dim] {_escape(clean)}", style=style or None)
        self._append_log(f"{stamp} {clean}\n")

    def _keep(self, message: str) -> None:
        """A line for run.log only (the live display already shows it on the terminal)."""
        self._append_log(f"{_utc_now().strftime('%H:%M:%S')} {redact(message, self.registry)}\n")

    def _append_log(self, line: str) -> None:
        """run.log; a folder that cannot be written (a full disk) must not stop the run's own
        cleanup (lock release, switching back): it is reported when the run ends."""
        try:
            self.artifacts.append_text("run.log", line)
        except ArtifactError as exc:
            self.unwritable = self.unwritable or exc

    # -- live progress -----------------------------------------------------------------------------
    def progress(self, step: str, item: str, state: str) -> None:
        """``item`` of ``step`` (a service of build/up) is now ``state`` (building, starting, healthy):
        a live display on a terminal, else one plain line per change."""
        self._progress.update(step, item, state)

    @contextmanager
    def watching(self, step: str, poll: Poll, interval: float | None = None) -> Iterator[None]:
        """Poll ``poll`` in the background from now until step ``step`` ends (or the block does),
        reporting each item's changes. A failing poll ends the watching, never the run."""
        watcher = self._progress.watch(step, poll, interval)
        try:
            yield
        finally:
            watcher.stop()

    def warn(self, message: str) -> None:
        self.warnings.append(redact(message, self.registry))
        self.log(f"WARNING: {message}", style="yellow")

    def mark_partial(self, what: str, why: str) -> None:
        """Something the full artifact set needs was skipped: the outcome becomes partial."""
        self.skipped.append({"what": what, "why": redact(why, self.registry)})
        self._partial_reasons.append(what)
        self.warn(f"{what} skipped: {why}")

    @property
    def is_partial(self) -> bool:
        return bool(self._partial_reasons)

    # -- steps -----------------------------------------------------------------------------------
    @contextmanager
    def step(self, name: str, since: float | None = None) -> Iterator[StepHandle]:
        """Time a step and record how it ended. ``since``: a time.monotonic() at which the step
        really began (work done before the Run existed, such as loading the settings)."""
        step = Step(name=name, started=_iso(_utc_now()),
                    offset=self._elapsed() if since is None else max(0.0, round(since - self._t0, 3)))
        self.steps.append(step)
        self.log(f"[{name}] start")
        self._progress.begin(name)
        self._open_steps.append(name)
        mine = self._thread.__dict__.setdefault("steps", [])
        mine.append(name)
        began = self._thread.__dict__.pop("began", None)
        if began is not None:
            began.set()
        t0 = time.monotonic() if since is None else since
        try:
            yield StepHandle(step)
        except BaseException as exc:
            step.status = "failed"
            step.message = self._redacted_error(exc)
            raise
        finally:
            self._open_steps.remove(name)
            mine.remove(name)
            self._progress.end(name)  # its last item states are reported before its end line
            step.seconds = round(time.monotonic() - t0, 3)
            self.log(f"[{name}] {step.status} in {step.seconds:.1f}s" + (f": {step.message}" if step.message else ""))

    def command_timer(self, host: str) -> Callable[[str, float], None]:
        """A Host's observer: each remote command's time, added up per step and command in
        run.json's ``commands`` (the profile of where a run's seconds go)."""
        def observe(label: str, seconds: float) -> None:
            # The step this thread is in; a worker thread of a step (collect's, the cutover's) has
            # none of its own: the step begun last is its.
            mine = self._thread.__dict__.get("steps") or self._open_steps
            key = (mine[-1] if mine else "-", host, label)
            with self._commands_lock:
                entry = self._commands.setdefault(key, [0, 0.0, 0.0])
                entry[0] += 1
                entry[1] += seconds
                entry[2] = max(entry[2], seconds)
        return observe

    def in_this_step(self) -> Callable[[], None]:
        """A worker pool's initializer: its threads' commands count in the caller's step (the
        step begun last may be another, running beside it)."""
        steps = list(self._thread.__dict__.get("steps") or [])

        def adopt() -> None:
            self._thread.steps = list(steps)
        return adopt

    def command_profile(self, limit: int = 60) -> list[dict[str, Any]]:
        """The commands that took longest in all, per step: what run.json's ``commands`` holds."""
        with self._commands_lock:
            rows = sorted(self._commands.items(), key=lambda kv: -kv[1][1])[:limit]
        return [{"step": step, "host": host, "command": redact(label, self.registry), "count": int(n),
                 "seconds": round(total, 3), "longest": round(longest, 3)}
                for (step, host, label), (n, total, longest) in rows]

    def beside(self, work: Callable[[], T]) -> Future[T]:
        """``work`` in a thread beside the caller (checks from here while collect reads the droplet);
        returns once ``work`` has begun its first step, so run.json keeps the steps in the order
        they were started."""
        began = threading.Event()

        def body() -> T:
            self._thread.began = began
            try:
                return work()
            finally:
                self._thread.__dict__.pop("began", None)
                began.set()

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside")
        future = pool.submit(body)
        pool.shutdown(wait=False)
        self._beside.append(future)
        began.wait()
        return future

    def add_checks(self, results: list[dict[str, Any]], first: bool = False) -> None:
        """Check results for run.json; ``first``: before those already there (the checks from here
        come before the backup checks, whichever finished first)."""
        with self._checks_lock:
            self.checks = (list(results) + list(self.checks or [])) if first else (list(self.checks or []) + list(results))

    def record(self, key: str, value: Any) -> None:
        """Keep a step's typed result in run.json's details (dataclasses become plain data)."""
        self.details[key] = _plain(value)

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._t0, 3)

    def _record_failure_outside_steps(self, exc: BaseException) -> None:
        """An error raised between steps (a task checking a required setting, say) still gets a
        failed row, so a failed run never shows only ok rows. A missing setting is the settings
        step's failure; anything else gets a row named after the task."""
        if any(s.status == "failed" for s in self.steps):
            return
        message = self._redacted_error(exc)
        name = "settings" if isinstance(exc, ConfigError) else self.task
        step = next((s for s in self.steps if s.name == name and s.status == "ok"), None)
        if step is None:
            step = Step(name=name, started=_iso(_utc_now()), offset=self._elapsed())
            self.steps.append(step)
        step.status, step.message = "failed", message

    def skip_step(self, name: str, reason: str) -> None:
        self.steps.append(Step(name=name, status="skipped", started=_iso(_utc_now()), offset=self._elapsed(),
                               message=redact(reason, self.registry)))
        self.log(f"[{name}] skipped: {reason}")

    def _redacted_error(self, exc: BaseException) -> str:
        """The error as the operator reads it, redacted. Its fix hint is help text this program
        wrote ("write it as KEY=value"): registered, so key-based masking keeps its wording."""
        hint = getattr(exc, "hint", "")
        if isinstance(hint, str):
            self.registry.add_help(hint)
        return redact(_describe(exc), self.registry)

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "Run":
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self.finish(exc)
        return False

    def _await_beside(self, timeout: float = BESIDE_GRACE_S) -> None:
        """Work begun beside the main thread ends before the record is written: an interrupt that
        reached the main thread while collect read the droplet in its own thread left collect
        writing files after run.json (a half-written file in the run folder; CI at 79ce3b3). Its
        commands are bounded; a second Ctrl-C stops the wait (a second SIGTERM meets the handler
        the run replaced, as after any run)."""
        pending = [f for f in self._beside if not f.done()]
        if not pending:
            return
        try:
            futures_wait(pending, timeout=timeout)
        except (KeyboardInterrupt, Terminated):
            pass

    def finish(self, exc: BaseException | None = None) -> None:
        """Write run.json and summary.md. Idempotent; never raises over the original error."""
        if self._finished:
            return
        self._finished = True
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self.outcome, self.exit_code = _outcome_for(exc, self.is_partial)
        if exc is not None and not isinstance(exc, (KeyboardInterrupt, Terminated)):
            self.error = self._redacted_error(exc)
            if isinstance(exc, Exception):
                self._record_failure_outside_steps(exc)
            if not isinstance(exc, OperatorError):
                # Unexpected: keep the traceback for diagnosis, in the run folder only, redacted.
                try:
                    self.artifacts.write_text("error-traceback.txt", "".join(traceback.format_exception(exc)))
                except ArtifactError as unwritable:
                    self.unwritable = self.unwritable or unwritable
        elif isinstance(exc, (KeyboardInterrupt, Terminated)):
            self._record_failure_outside_steps(exc)      # a signal between two steps still shows
            self.error = format_error("interrupted by " + ("SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"),
                                      f"run `{self.rerun}` again to finish; `inv verify` shows what serves now")
        # The error is the main thread's: recorded before the steps beside it end (one that fails
        # because the interrupt closed its connection must not stand in for it).
        self._await_beside()
        self.ended_at = _utc_now()
        self.duration = self._elapsed()
        if self.error:
            self.log(f"ERROR: {self.error}", style="bold red")
        self.log(f"outcome: {self.outcome} (exit {self.exit_code}) in {self.duration:.1f}s")

        # The console summary appends to run.log, so it comes before the inventory in run.json.
        try:
            if not self.quiet:
                summary.print_console_summary(self)
            elif self.exit_code:
                self.console.print(_escape(f"run folder: {self.folder}"))
        except ArtifactError as exc:
            self.unwritable = self.unwritable or exc
        if self.unwritable is not None and not self.exit_code:   # a run without its record did not succeed
            self.outcome, self.exit_code = "failed", EXIT_FAILED
        # Each file on its own: a failure writing one never costs the run the others.
        errors: list[Exception] = []
        for write in (lambda: self.artifacts.write_text("summary.md", summary.summary_markdown(self)),
                      lambda: self.artifacts.write_text(
                          "report.html", html.render(self.manifest(), partial(redact, registry=self.registry))),
                      lambda: self.artifacts.write_json("run.json", self.manifest())):
            try:
                write()
            except ArtifactError as exc:
                self.unwritable = self.unwritable or exc
            except Exception as exc:  # noqa: BLE001 - raised below, once the other files are written
                errors.append(exc)
        if self.unwritable is not None:
            self.console.print(_escape(format_error(f"the run folder {self.folder} is incomplete: "
                                                    f"{self.unwritable.message}", self.unwritable.hint)),
                               style="bold red")
        if errors:
            raise errors[0]

    @property
    def rerun(self) -> str:
        """The `inv` command that runs this task again (what an interrupted run's fix names)."""
        flag = " --update-only" if (self.task, self.mode) == ("deploy", "update") else ""
        return f"inv {self.task.replace('-', '.')}{flag}"

    def manifest(self) -> dict[str, Any]:
        return {
            "run_id": self.id,
            "task": self.task,
            "mode": self.mode,
            "command": self.command,
            "operator": self.operator,
            "start": _iso(self.started_at),
            "end": _iso(getattr(self, "ended_at", _utc_now())),
            "duration_seconds": getattr(self, "duration", None),
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "error": self.error,
            "target": self.target,
            "steps": [asdict(s) for s in self.steps],
            "commands": self.command_profile(),
            "checks": self.checks,
            "warnings": self.warnings,
            "skipped": self.skipped,
            "details": self.details,
            "files": self.artifacts.inventory(exclude=("run.json",)),
        }


def _outcome_for(exc: BaseException | None, partial: bool) -> tuple[str, int]:
    from core import errors

    if exc is None:
        return ("partial", errors.EXIT_PARTIAL) if partial else ("success", errors.EXIT_OK)
    if isinstance(exc, Terminated):
        return "interrupted", errors.EXIT_TERMINATED
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", errors.EXIT_INTERRUPTED
    if isinstance(exc, OperatorError):
        return exc.outcome, exc.exit_code
    return "failed", errors.EXIT_FAILED


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    return value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OperatorError):
        return str(exc)
    if isinstance(exc, (KeyboardInterrupt, Terminated)):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def operator_name() -> str:
    """user@host of whoever runs this process."""
    return f"{_user()}@{socket.gethostname()}"


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()
