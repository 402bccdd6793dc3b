"""Past runs: list them, and diff two runs' artifacts (what changed after an upgrade went wrong).
Reads run folders only; pure apart from reading files."""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.checks.lines import human_line

# Artifacts worth comparing between runs, in the order an operator reads them.
DIFFED_FILES = (
    "remote/dynamic.yml",
    "remote/traefik-static.yml",
    "remote/compose-ps.json",
    "remote/curl-root.txt",
    "remote/curl-api-health.txt",
    "http/headers-root.txt",
    "http/headers-api-health.txt",
    "remote/current-release.txt",
)
# Header lines that change on every request and would drown the real differences.
_VOLATILE_PREFIXES = ("date:", "x-ratelimit-remaining:", "x-ratelimit-reset:", "retry-after:", "content-length:")


@dataclass(frozen=True)
class RunInfo:
    folder: Path
    run_id: str
    task: str
    mode: str
    start: str
    outcome: str
    duration: float | None


def list_runs(logs_dir: Path) -> list[RunInfo]:
    """Every run folder with a readable run.json, oldest first."""
    runs = []
    if not logs_dir.is_dir():
        return runs
    for manifest in sorted(logs_dir.glob("*/run.json")):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        runs.append(RunInfo(folder=manifest.parent, run_id=data.get("run_id", manifest.parent.name),
                            task=data.get("task", "?"), mode=data.get("mode", "?"), start=data.get("start", ""),
                            outcome=data.get("outcome") or "unfinished", duration=data.get("duration_seconds")))
    return runs


def last_run(logs_dir: Path, tasks: tuple[str, ...], skip_modes: tuple[str, ...] = ()) -> RunInfo | None:
    """The newest run of one of ``tasks`` (a mode ending in one of ``skip_modes`` left out),
    reading only the run.json files it must: a year of runs is thousands of folders, and
    `inv status` has two seconds. Folder names start with their UTC time, so newest is last."""
    if not logs_dir.is_dir():
        return None
    folders = sorted((p for p in logs_dir.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)
    newest: RunInfo | None = None
    for folder in folders:
        timestamped = "_" in folder.name
        if timestamped and not any(f"_{task}-" in folder.name for task in tasks):
            continue
        try:
            data = json.loads((folder / "run.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        mode = str(data.get("mode", ""))
        if data.get("task") not in tasks or (skip_modes and mode.endswith(skip_modes)):
            continue
        info = RunInfo(folder=folder, run_id=data.get("run_id", folder.name), task=data["task"], mode=mode,
                       start=data.get("start", ""), outcome=data.get("outcome") or "unfinished",
                       duration=data.get("duration_seconds"))
        if newest is None or info.start > newest.start:
            newest = info
        if timestamped:
            break     # the newest timestamped one; the fixed folder (latest/) was weighed in if it came first
    return newest


def resolve_run(logs_dir: Path, ref: str) -> Path:
    """A run by folder name, unique prefix, path, ``latest``/``previous``, or a negative index
    (-1 = newest; on the command line write it as --a=-2, since a bare -2 reads as a flag)."""
    ref = {"latest": "-1", "previous": "-2"}.get(ref, ref)
    candidate = Path(ref)
    if candidate.is_dir() and (candidate / "run.json").is_file():
        return candidate
    runs = list_runs(logs_dir)
    if ref.lstrip("-").isdigit() and ref.startswith("-"):
        index = int(ref)
        if -len(runs) <= index < 0:
            return runs[index].folder
        raise LookupError(f"there are only {len(runs)} runs in {logs_dir}; {ref} is out of range")
    matches = [r.folder for r in runs if r.folder.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupError(f"no run folder in {logs_dir} starts with {ref!r} (see `inv runs`)")
    raise LookupError(f"{ref!r} matches {len(matches)} runs; give more of the folder name")


def _normalise(name: str, text: str) -> list[str]:
    lines = text.splitlines()
    if name.endswith(("headers-root.txt", "headers-api-health.txt", "curl-root.txt", "curl-api-health.txt")):
        lines = [ln for ln in lines if not ln.lower().startswith(_VOLATILE_PREFIXES)]
    if name.endswith("compose-ps.json"):
        try:
            services = json.loads(text)
            lines = [f"{s.get('service')}: {s.get('state')} {s.get('health') or ''}".rstrip()
                     for s in sorted(services, key=lambda s: str(s.get("service")))]
        except (json.JSONDecodeError, AttributeError):
            pass
    return lines


def _checks(folder: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((folder / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {c["name"]: c for c in data.get("checks", []) if "name" in c}


def diff_runs(a: Path, b: Path) -> str:
    """A readable report of what changed from run ``a`` to run ``b``."""
    out: list[str] = [f"--- {a.name}", f"+++ {b.name}", ""]
    for name in DIFFED_FILES:
        fa, fb = a / name, b / name
        if not fa.exists() and not fb.exists():
            continue
        la = _normalise(name, fa.read_text()) if fa.exists() else ["(missing)"]
        lb = _normalise(name, fb.read_text()) if fb.exists() else ["(missing)"]
        delta = list(difflib.unified_diff(la, lb, fromfile=f"a/{name}", tofile=f"b/{name}", lineterm="", n=2))
        out.append(f"== {name}: " + ("changed" if delta else "same"))
        out.extend(delta)
    ca, cb = _checks(a), _checks(b)
    changed = []
    for check in sorted(set(ca) | set(cb)):
        sa = ca.get(check, {}).get("status", "(absent)")
        sb = cb.get(check, {}).get("status", "(absent)")
        if sa != sb or ca.get(check, {}).get("observed") != cb.get(check, {}).get("observed"):
            changed.append(f"  {check}: {sa} -> {sb}  ({human_line(cb[check]) if check in cb else 'not run'})")
    out.append("== checks: " + ("changed" if changed else "same"))
    out.extend(changed)
    return "\n".join(out) + "\n"
