"""Where every second of a release goes, with traffic running: the profile issue 23 starts from.

    .venv/bin/python benchmarks/profile.py [--keep] [--out benchmarks/profile-baseline.md]

Starts its own lab (name sdprof, port 8794, subnet 10.72.0.0/24), deploys a copy of stack/ in
full, then, each with lab/prober.py sending traffic (20 req/s to /, 5 to /api/health, 1 to
/api/notes): update-only with no change, update-only after one api file changed, update-only
changing api, django and the front end, and a rollback of that last release. For each it prints
the wall time, the failed requests, the time of every step, and the remote commands that took
longest (run.json's ``commands``: added up per step). ``--out`` writes the same as Markdown (the
committed baseline). Asserts nothing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labrun import LabRun  # noqa: E402

from lab.prober import DEFAULT_ROUTES, Prober  # noqa: E402

LAB = {"LAB_NAME": "sdprof", "LAB_API_PORT": "8794", "LAB_SUBNET": "10.72.0.0/24"}
TOP_COMMANDS = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    parser.add_argument("--out", type=Path, help="also write the profile as Markdown to this file")
    args = parser.parse_args()
    # The prober's /api traffic must not exhaust its own rate-limit bucket.
    lab = LabRun(LAB, CHECK_RATE_LIMIT="false", RATE_LIMIT_API_RPM="1200")
    try:
        lab.up()
        rows = [scenario(lab, "full deploy", ("deploy",), probe=False)]
        ip, domain = lab.last_run()["target"]["ip"], lab.values["DOMAIN"]
        rows.append(scenario(lab, "update-only, no change", ("deploy", "--update-only"), ip, domain))
        edit(lab.stack / "api" / "app" / "__init__.py", "# profile: one api file\n")
        rows.append(scenario(lab, "update-only, one api file", ("deploy", "--update-only"), ip, domain))
        edit(lab.stack / "api" / "app" / "__init__.py", "# profile: api, django, frontend\n")
        edit(lab.stack / "django" / "config" / "settings.py", "# profile: api, django, frontend\n")
        index = lab.stack / "frontend" / "index.html"
        index.write_text(index.read_text().replace("</body>", "<!-- profile --></body>"))
        rows.append(scenario(lab, "update-only, api + django + frontend", ("deploy", "--update-only"), ip, domain))
        rows.append(scenario(lab, "rollback (api + django + frontend)", ("rollback",), ip, domain))
        text = render(rows)
        print(text)
        if args.out:
            args.out.write_text(text)
        return 0
    finally:
        if not args.keep:
            lab.down()


def edit(path: Path, line: str) -> None:
    path.write_text(path.read_text() + "\n" + line)


def scenario(lab: LabRun, name: str, argv: tuple[str, ...], ip: str = "", domain: str = "",
             probe: bool = True) -> dict:
    if probe:
        with Prober(ip, domain, DEFAULT_ROUTES) as prober:
            seconds, res = lab.inv(*argv, ok=False)
        traffic = prober.report.summary()
    else:
        seconds, res = lab.inv(*argv, ok=False)
        traffic = {}
    run = lab.last_run()
    if res.returncode:
        print(f"--- {name}: exit {res.returncode}: {run.get('error')}", flush=True)
    if probe and prober.report.failed:
        print(f"--- {name}: failed requests: "
              + "; ".join(f"{p.route} at {p.at:.1f} s: {p.status or p.error}" for p in prober.report.failed), flush=True)
    return {"name": name, "exit": res.returncode, "seconds": seconds, "traffic": traffic,
            "steps": [(s["name"], s["seconds"]) for s in run["steps"] if s["status"] != "skipped"],
            "commands": run.get("commands", [])[:TOP_COMMANDS],
            "replaced": run["details"].get("up", {}).get("replaced", [])}


def render(rows: list[dict]) -> str:
    cpu = _cpu_model()
    out = [f"# Release profile ({dt.date.today().isoformat()}, {os.cpu_count()} cores, {cpu}, {platform.system()})",
           "", "Measured by `.venv/bin/python benchmarks/profile.py --out benchmarks/profile-baseline.md` on the "
           "lab, with the prober sending traffic during every scenario but the first.", "",
           "| scenario | exit | wall s | requests | failed | replaced start-first |", "|---|---|---|---|---|---|"]
    for r in rows:
        t = r["traffic"]
        out.append(f"| {r['name']} | {r['exit']} | {r['seconds']:.1f} | {t.get('sent', '-')} | {t.get('failed', '-')} "
                   f"| {', '.join(r['replaced']) or '-'} |")
    for r in rows:
        out += ["", f"## {r['name']}: {r['seconds']:.1f} s", "",
                "steps: " + ", ".join(f"{n} {s:.1f}" for n, s in r["steps"]), "",
                "| step | command | count | seconds | longest |", "|---|---|---|---|---|"]
        out += [f"| {c['step']} | `{c['command']}` | {c['count']} | {c['seconds']:.2f} | {c['longest']:.2f} |"
                for c in r["commands"]]
    return "\n".join(out) + "\n"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())
