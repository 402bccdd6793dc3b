"""Full deploy against update-only on the lab (SC-004 / NFR-007: update-only <= 70% of full).

    .venv/bin/python benchmarks/deploy_modes.py [--keep]

Starts its own lab (name sdbench, port 8797, subnet 10.79.0.0/24), deploys a copy of stack/
in full, then update-only with no change, then update-only after a one-file API change, and
prints wall time and bytes pushed for each with their ratios to the full deploy. Also samples
the home page and /api/health latency through Traefik. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LAB = {"LAB_NAME": "sdbench", "LAB_API_PORT": "8797", "LAB_SUBNET": "10.79.0.0/24"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sdbench-"))
    stack = tmp / "stack"
    shutil.copytree(REPO / "stack", stack, ignore=shutil.ignore_patterns("node_modules", "dist", "__pycache__", ".env"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN", "DOMAIN", "DEPLOY_", "SSH_"))}
    env.update(LAB, LAB_STATE_DIR=str(tmp / "lab"), LOGS_DIR=str(tmp / "runs"), STACK_DIR=str(stack),
               SSH_KNOWN_HOSTS=str(tmp / "known_hosts"), CHECK_RATE_LIMIT="false")

    def inv(*argv: str, env_file: bool = True) -> tuple[float, subprocess.CompletedProcess]:
        cmd = [sys.executable, "-m", "invoke", *argv] + (["--env-file", str(tmp / "lab.env")] if env_file else [])
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stdout[-3000:], res.stderr[-2000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"`inv {' '.join(argv)}` failed with exit {res.returncode}")
        return time.monotonic() - t0, res

    def last_run() -> dict:
        folder = sorted((tmp / "runs").iterdir())[-1]
        return json.loads((folder / "run.json").read_text())

    try:
        inv("lab.up", env_file=False)
        (tmp / "lab.env").write_text(inv("lab.env", env_file=False)[1].stdout)
        rows = []
        seconds, _ = inv("deploy")
        full = last_run()
        rows.append(("full deploy", seconds, full["details"]["push"]["bytes_sent"], full))
        seconds, _ = inv("deploy", "--update-only")
        rows.append(("update-only, no change", seconds, last_run()["details"]["push"]["bytes_sent"], last_run()))
        target = stack / "api" / "app" / "__init__.py"
        target.write_text(target.read_text() + "\n# benchmark change\n")
        seconds, _ = inv("deploy", "--update-only")
        rows.append(("update-only, one API file", seconds, last_run()["details"]["push"]["bytes_sent"], last_run()))

        base_s, base_b = rows[0][1], rows[0][2]
        print(f"{'mode':28} {'wall s':>8} {'ratio':>7} {'bytes pushed':>13} {'ratio':>7}  rebuilt")
        for name, s, b, data in rows:
            rebuilt = ",".join(data["details"].get("up", {}).get("rebuilt", [])) or "-"
            print(f"{name:28} {s:8.1f} {s / base_s:7.2f} {b:13d} {b / base_b:7.3f}  {rebuilt}")
        for data in (rows[-1][3],):
            checks = {c["name"]: c for c in data["checks"]}
            for name in ("latency-home", "latency-api-health"):
                obs = checks.get(name, {}).get("observed") or {}
                print(f"{name}: p50 {obs.get('p50_s')} s, p95 {obs.get('p95_s')} s over {obs.get('samples')} samples")
        steps = {s["name"]: s["seconds"] for s in rows[0][3]["steps"]}
        print("full deploy steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))
    finally:
        if not args.keep:
            subprocess.run([sys.executable, "-m", "invoke", "lab.down"], cwd=REPO, env=env, capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
