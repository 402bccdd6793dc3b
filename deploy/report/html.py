"""report.html: the run for a browser. One self-contained file (inline CSS, no script, nothing
fetched), so it opens from the run folder anywhere: a timeline of the steps to scale, the
checks in one line each, latency figures, what was skipped and why, links to every artifact."""
from __future__ import annotations

import html
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

from deploy.checks.lines import human_line, millis
from deploy.report.summary import FINAL_FILES, MARK, step_line

Clean = Callable[[str], str]

_TONE = {"ok": "good", "pass": "good", "success": "good", "warning": "warn", "warn": "warn", "partial": "warn",
         "failed": "bad", "fail": "bad", "config-error": "bad", "interrupted": "bad", "skipped": "skip"}

_CSS = """
:root { --good: #1a7f37; --warn: #9a6700; --bad: #cf222e; --skip: #8c959f; --line: #d0d7de; --muted: #57606a; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0 auto; max-width: 1100px; padding: 20px 24px 40px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre.error { background: #fff5f5; border: 1px solid #ffcecb; padding: 10px; white-space: pre-wrap; }
.meta { color: var(--muted); margin: 0 0 6px; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; color: #fff; font-weight: 600; }
.t-good { color: var(--good); } .t-warn { color: var(--warn); } .t-bad { color: var(--bad); } .t-skip { color: var(--skip); }
.badge.t-good, .bar.t-good { background: var(--good); color: #fff; }
.badge.t-warn, .bar.t-warn { background: #d4a72c; color: #fff; }
.badge.t-bad, .bar.t-bad { background: var(--bad); color: #fff; }
.badge.t-skip, .bar.t-skip { background: var(--skip); color: #fff; }
.timeline { display: grid; grid-template-columns: 9em 1fr 6.5em; gap: 2px 10px; align-items: center; }
.timeline .name { font-weight: 600; overflow-wrap: anywhere; }
.track { position: relative; height: 16px; background: #f6f8fa; border-radius: 3px; }
.bar { position: absolute; top: 0; bottom: 0; min-width: 2px; border-radius: 3px; }
.secs { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.timeline .msg { grid-column: 2 / 4; color: var(--muted); font-size: 12px; margin: -2px 0 4px; }
.axis { display: flex; justify-content: space-between; color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px; border-bottom: 1px solid var(--line); }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.msg { color: var(--muted); font-size: 12px; }
ul.files { columns: 2; padding-left: 18px; } ul.files li { break-inside: avoid; }
.size { color: var(--muted); font-size: 12px; }
"""


def _tone(status: Any) -> str:
    return "t-" + _TONE.get(str(status), "skip")


def _timeline(steps: Sequence[Mapping[str, Any]], total: float, esc: Callable[[Any], str]) -> list[str]:
    rows = ['<div class="timeline" id="timeline">']
    for s in steps:
        name, status, seconds = s.get("name"), s.get("status"), float(s.get("seconds") or 0)
        mark = MARK.get(status, status)
        left, width = 100 * float(s.get("offset") or 0) / total, 100 * seconds / total
        rows += [
            f'<div class="name">{esc(name)}</div>',
            f'<div class="track"><div class="bar {_tone(status)}" data-step="{esc(name)}" '
            f'data-seconds="{seconds:.3f}" title="{esc(f"{name}: {mark} in {seconds:.2f} s")}" '
            f'style="left:{left:.3f}%;width:{width:.3f}%"></div></div>',
            f'<div class="secs {_tone(status)}">{esc(mark)} {seconds:.1f}s</div>',
        ]
        if s.get("message"):
            rows.append(f'<div class="msg">{esc(step_line(str(s["message"])))}</div>')
    rows += ["</div>", f'<div class="axis"><span>0 s</span><span>{total:.1f} s</span></div>']
    return rows


def _checks(checks: Sequence[Mapping[str, Any]], esc: Callable[[Any], str]) -> list[str]:
    if not checks:
        return ["<p>No checks ran in this run.</p>"]
    rows = ['<table id="checks"><tr><th>result</th><th>check</th><th>observed</th><th>expected</th><th>message</th></tr>']
    for c in checks:
        rows.append(f'<tr><td><span class="badge {_tone(c.get("status"))}">{esc(MARK.get(c.get("status"), c.get("status")))}'
                    f'</span></td><td>{esc(c.get("name"))}</td><td class="line">{esc(human_line(c))}</td>'
                    f'<td>{esc(c.get("expected") or "")}</td><td class="msg">{esc(c.get("message") or "")}</td></tr>')
    return rows + ["</table>"]


def _latency(checks: Sequence[Mapping[str, Any]], esc: Callable[[Any], str]) -> list[str]:
    measured = [c for c in checks if str(c.get("name", "")).startswith("latency-") and isinstance(c.get("observed"), Mapping)
                and "p95_s" in c["observed"]]
    if not measured:
        return ["<p>No latency was measured in this run.</p>"]
    rows = ['<table id="latency"><tr><th>route</th><th>p50</th><th>p95</th><th>samples</th><th>budget</th>'
            "<th>result</th></tr>"]
    for c in measured:
        o = c["observed"]
        rows.append(f'<tr><td>{esc(str(c["name"])[len("latency-"):])}</td><td class="num">{esc(millis(o["p50_s"]))}</td>'
                    f'<td class="num">{esc(millis(o["p95_s"]))}</td><td class="num">{esc(o.get("samples"))}</td>'
                    f'<td>{esc(c.get("expected") or "")}</td>'
                    f'<td class="{_tone(c.get("status"))}">{esc(MARK.get(c.get("status"), c.get("status")))}</td></tr>')
    return rows + ["</table>"]


def _skipped(manifest: Mapping[str, Any], esc: Callable[[Any], str]) -> list[str]:
    items = [(s.get("what"), s.get("why")) for s in manifest.get("skipped") or []]
    items += [(f"step {s.get('name')}", s.get("message") or "no reason given")
              for s in manifest.get("steps") or [] if s.get("status") == "skipped"]
    items += [(f"check {c.get('name')}", c.get("message") or "") for c in manifest.get("checks") or []
              if c.get("status") == "skipped"]
    if not items:
        return ["<p>Nothing was skipped.</p>"]
    return ['<ul id="skipped">'] + [f"<li><b>{esc(what)}</b>: {esc(why)}</li>" for what, why in items] + ["</ul>"]


def _files(files: Sequence[Mapping[str, Any]], esc: Callable[[Any], str]) -> list[str]:
    listed = [f for f in files if f.get("path") not in FINAL_FILES]
    # Written in the same finish as this report: listed without a size.
    finals = [{"path": name} for name in FINAL_FILES if name != "report.html"]
    rows = ['<ul class="files" id="files">']
    for f in [*listed, *finals]:
        size = f' <span class="size">{int(f["bytes"]):,} B</span>' if "bytes" in f else ""
        rows.append(f'<li><a href="{esc(quote(str(f["path"])))}">{esc(f["path"])}</a>{size}</li>')
    return rows + ["</ul>"]


def render(manifest: Mapping[str, Any], clean: Clean) -> str:
    """The whole page for a run's manifest (Run.manifest()). Every text goes through ``clean``
    (redaction) before it is HTML-escaped, so an escaped secret cannot slip past the redactor."""
    def esc(value: Any) -> str:
        return html.escape(clean("" if value is None else str(value)))

    steps = manifest.get("steps") or []
    checks = manifest.get("checks") or []
    total = max([float(manifest.get("duration_seconds") or 0)]
                + [float(s.get("offset") or 0) + float(s.get("seconds") or 0) for s in steps] + [0.001])
    target = manifest.get("target") or {}
    where = " ".join(str(target[k]) for k in ("name", "region", "ip") if target.get(k)) or "no target"
    outcome = manifest.get("outcome")
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(manifest.get('task'))} {esc(outcome)}: run {esc(manifest.get('run_id'))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<h1>{esc(manifest.get("task"))} ({esc(manifest.get("mode"))}) '
        f'<span class="badge {_tone(outcome)}" id="outcome">{esc(outcome)}</span></h1>',
        f'<p class="meta">run {esc(manifest.get("run_id"))} &middot; exit {esc(manifest.get("exit_code"))} &middot; '
        f'{total:.1f} s &middot; started {esc(manifest.get("start"))} &middot; {esc(manifest.get("operator"))} '
        f"&middot; target {esc(where)}</p>",
        f'<p class="meta"><code>{esc(manifest.get("command"))}</code></p>',
    ]
    if manifest.get("error"):
        parts.append(f'<pre class="error" id="error">{esc(manifest["error"])}</pre>')
    parts += ["<h2>Timeline</h2>", *_timeline(steps, total, esc)]
    parts += ["<h2>Checks</h2>", *_checks(checks, esc)]
    parts += ["<h2>Latency</h2>", *_latency(checks, esc)]
    parts += ["<h2>Skipped</h2>", *_skipped(manifest, esc)]
    if manifest.get("warnings"):
        parts += ["<h2>Warnings</h2>", '<ul id="warnings">'] + [f"<li>{esc(w)}</li>" for w in manifest["warnings"]] + ["</ul>"]
    parts += ["<h2>Files</h2>", *_files(manifest.get("files") or [], esc), "</body></html>", ""]
    return "\n".join(parts)
