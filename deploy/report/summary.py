"""summary.md and the console summary: the same facts, for a file and for a terminal."""
from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deploy.checks.lines import clip, human_line
from deploy.redact import redact



class FinishedRun(Protocol):
    """What a summary reads of a finished Run (deploy/report/run.py, which writes the summaries)."""

    id: str
    task: str
    mode: str
    command: str
    outcome: str | None
    exit_code: int
    error: str | None
    started_at: datetime
    folder: Path
    target: dict[str, Any]
    steps: list[Any]
    checks: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    warnings: list[str]
    registry: Any
    artifacts: Any
    console: Console

MARK = {"ok": "ok", "pass": "pass", "warning": "WARN", "warn": "WARN", "failed": "FAIL", "fail": "FAIL", "skipped": "skip"}
_STYLE = {"ok": "green", "pass": "green", "warning": "yellow", "warn": "yellow", "failed": "red", "fail": "red", "skipped": "dim"}


# Written last by Run.finish, so they are not in the inventory the other files are listed from.
FINAL_FILES = ("summary.md", "report.html", "run.json")


def step_line(message: str) -> str:
    """A step's message as one table cell: its first line (the fix follows in the error block)."""
    return clip(message.splitlines()[0]) if message else ""


def _md_cell(value: Any) -> str:
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def summary_markdown(run: FinishedRun) -> str:
    t = run.target or {}
    lines = [
        f"# Run {run.id}",
        "",
        f"- outcome: **{run.outcome}** (exit {run.exit_code})",
        f"- task: {run.task} ({run.mode})",
        f"- command: `{run.command}`",
        f"- started: {run.started_at.isoformat(timespec='seconds')}; duration: {getattr(run, 'duration', 0):.1f} s",
        f"- target: {t.get('name') or '-'} in {t.get('region') or '-'} at {t.get('ip') or 'unknown IP'}",
    ]
    if run.error:
        lines += ["", "## Error", "", "```", run.error, "```"]
    lines += ["", "## Steps", "", "| step | status | seconds | message |", "|---|---|---|---|"]
    for s in run.steps:
        lines.append(f"| {s.name} | {MARK.get(s.status, s.status)} | {s.seconds:.1f} | {_md_cell(s.message)} |")
    if run.checks:
        lines += ["", "## Checks", "", "| check | result | observed | expected | message |", "|---|---|---|---|---|"]
        for c in run.checks:
            lines.append(f"| {c.get('name')} | {MARK.get(c.get('status'), c.get('status'))} | {_md_cell(human_line(c))} "
                         f"| {_md_cell(c.get('expected'))} | {_md_cell(c.get('message'))} |")
    if run.skipped:
        lines += ["", "## Skipped", ""] + [f"- {s['what']}: {s['why']}" for s in run.skipped]
    if run.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in run.warnings]
    files = run.artifacts.inventory(exclude=FINAL_FILES)
    lines += ["", "## Files", ""] + [f"- {f['path']} ({f['bytes']} bytes)" for f in files]
    lines += [f"- {name}" for name in FINAL_FILES] + [""]
    return "\n".join(lines)


def print_console_summary(run: FinishedRun) -> None:
    """The compact table on the console; the same text goes to run.log. Cells are redacted."""
    def clean(value: Any) -> str:
        return redact(str(value), run.registry)

    table = Table(title=f"{run.task} ({run.mode}): {run.outcome}", show_lines=False)
    table.add_column("step / check")
    table.add_column("result")
    table.add_column("time / observed", overflow="fold")
    for s in run.steps:
        table.add_row(clean(s.name), f"[{_STYLE.get(s.status, '')}]{MARK.get(s.status, s.status)}[/]",
                      escape(clean(f"{s.seconds:.1f}s  {step_line(s.message)}".rstrip())))
    for c in run.checks:
        status = c.get("status", "")
        table.add_row(f"  {clean(c.get('name'))}", f"[{_STYLE.get(status, '')}]{MARK.get(status, status)}[/]",
                      escape(clean(human_line(c))))
    # The folder is named once, here, at the very end: the line an operator copies.
    # A check that did not pass: its whole message, which names the fix (the row shows what it saw).
    tail = [f"{c.get('name')} {c.get('status')}: {c.get('message')}" for c in run.checks
            if c.get("status") in ("warn", "fail") and c.get("message")]
    tail += [f"skipped: {s['what']}: {s['why']}" for s in run.skipped]
    tail.append(f"run folder: {run.folder} (open report.html)")
    run.console.print(table)
    for line in tail:
        run.console.print(escape(clean(line)))
    plain = Console(file=io.StringIO(), width=110, color_system=None)
    plain.print(table)
    run.artifacts.append_text("run.log", plain.file.getvalue() + "\n".join(tail) + "\n")
