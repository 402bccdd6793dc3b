"""Glue between an Invoke task and a Run: settings, the local artifact set, exit codes."""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from invoke.exceptions import Exit
from rich.console import Console

from core.errors import EXIT_FAILED, OperatorError
from deploy.report.artifacts import LOGS_HINT
from deploy.redact import redact_mapping
from deploy.report.run import Run
from deploy.settings import KEYS, Settings, load_settings, read_env_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def deploy_config(c: Any) -> dict[str, Any]:
    """The ``deploy`` section of the Invoke config (invoke.yaml) as plain dicts."""
    section = c.config.get("deploy", {}) if c is not None else {}
    return _plain(section)


def _plain(node: Any) -> Any:
    if hasattr(node, "items"):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node


def _fallback_logs(config: Mapping[str, Any], flags: Mapping[str, Any],
                   env_file: str | None = None) -> tuple[Path, bool]:
    """Where the run folder goes when the settings cannot be loaded (an invalid value elsewhere
    must not send the run folder somewhere else): the same precedence, read leniently."""
    logs = config.get("logs", {}) if isinstance(config.get("logs"), Mapping) else {}
    path = Path(env_file) if env_file else PROJECT_ROOT / ".env"
    try:
        from_file = read_env_file(path if path.is_absolute() else PROJECT_ROOT / path) if path.exists() else {}
    except OperatorError:  # the env file itself is broken: that is the error the run reports
        from_file = {}
    folder = Path(os.environ.get("LOGS_DIR") or from_file.get("LOGS_DIR") or logs.get("dir") or Settings.logs_dir)
    if not folder.is_absolute():
        folder = PROJECT_ROOT / folder
    stamp = os.environ.get("LOGS_TIMESTAMP") or from_file.get("LOGS_TIMESTAMP")
    timestamp = bool(logs.get("timestamp", Settings.logs_timestamp)) if stamp is None else stamp.lower() not in ("0", "false", "no", "off")
    if flags.get("LOGS_TIMESTAMP") is False:
        timestamp = False
    return folder, timestamp


def logs_dir(c: Any, env_file: str | None = None) -> Path:
    """Where run folders live (for tasks that only read them): the settings decide."""
    config = deploy_config(c)
    try:
        return load_settings(config, env_file=env_file, base_dir=PROJECT_ROOT).logs_dir
    except OperatorError:
        return _fallback_logs(config, {})[0]


def write_local_snapshot(run: Run, settings: Settings) -> None:
    """The local part of the artifact set: effective settings and a redacted env snapshot."""
    run.artifacts.write_json("local/settings.json", settings.snapshot())
    known = {k.env for k in KEYS} | {alias for k in KEYS for alias in k.aliases} | set(settings.stack_env)
    env_now = {k: v for k, v in sorted(os.environ.items()) if k in known}
    lines = [f"{k}={v}" for k, v in redact_mapping(env_now).items()]
    run.artifacts.write_text("local/environment.txt", "# process environment (setting names only)\n" + "\n".join(lines) + "\n")
    stack_lines = [f"{k}={v}" for k, v in redact_mapping(dict(settings.stack_env)).items()]
    run.artifacts.write_text("local/stack-env.txt", "# env file shipped to the droplet, redacted\n" + "\n".join(stack_lines) + "\n")
    run.artifacts.write_json("local/tooling.json", {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "env_file": str(settings.env_file) if settings.env_file else None,
    })


def run_task(c: Any, task: str, mode: str, flags: Mapping[str, Any], env_file: str | None,
             body: Callable[[Run, Settings], None], console: Console | None = None, quiet: bool = False) -> Run:
    """Load the settings, open a Run where they say, run ``body``; exit non-zero with a clean
    message. Tracebacks never reach the console: unexpected errors are summarised there and the
    redacted traceback is kept in the run folder (error-traceback.txt).

    ``quiet``: for the tasks whose own output is the point (logs, exec, status): the Run's lines
    go to stderr, and only its warnings, its error and a failed run's folder (Run.quiet).
    """
    config = deploy_config(c)
    started = time.monotonic()
    settings: Settings | None = None
    settings_error: OperatorError | None = None
    try:
        settings = load_settings(config, env_file=env_file, flags=flags, base_dir=PROJECT_ROOT)
        folder, timestamp = settings.logs_dir, settings.logs_timestamp
    except OperatorError as exc:
        settings_error = exc
        folder, timestamp = _fallback_logs(config, flags, env_file)
    try:
        if quiet and console is None:
            console = Console(stderr=True, highlight=False, soft_wrap=True)
        run = Run(folder, task, mode, sys.argv, timestamp=timestamp, console=console, quiet=quiet)
    except OSError as exc:  # nothing has happened yet, and there is no folder to record it in
        raise Exit(message=f"{task}: cannot create a run folder under {folder} "
                           f"({exc.strerror or type(exc).__name__})\n  fix: {LOGS_HINT}", code=EXIT_FAILED) from None
    try:
        with run:
            with run.step("settings", since=started):
                if settings_error is not None:
                    raise settings_error
            assert settings is not None
            write_local_snapshot(run, settings)
            body(run, settings)
    except SystemExit:
        raise
    except BaseException:  # the Run has recorded and shown it; map it to the exit code
        # The error itself was already shown and logged by the Run; end with one clean line.
        raise Exit(message=f"{task}: {run.outcome} (exit {run.exit_code})",  # the Run printed the folder
                   code=run.exit_code) from None
    if run.exit_code:
        raise Exit(code=run.exit_code)
    return run
