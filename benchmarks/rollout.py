"""Releases under traffic on the lab: failed requests and latency while the deployer rolls forward,
rolls back, and meets a release that never becomes healthy.

    .venv/bin/python benchmarks/rollout.py [--keep] [--repeat N]

Starts its own lab (name sdroll, port 8798, subnet 10.80.0.0/24), deploys a copy of stack/, then,
each with lab/prober.py sending 20 req/s to /, 5 req/s to /api/health and 1 req/s to /api/notes
(which reaches Django through the API): (a) an update-only that changes api, django and the
front end, (b) a rollback, (c) an update whose api never becomes healthy. Prints, per scenario:
requests sent and failed, p50/p99 latency during the deploy, wall time. Asserts nothing.

--repeat N then rolls the api forward N more times (the replacement where a rare failed request
was seen) and, for every failed request, prints what Traefik logged about it: its access-log
line (status from the api or from Traefik itself, retry attempts, the backend address) and its
error lines, read from the lab droplet with `docker exec`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab.prober import DEFAULT_ROUTES, Prober  # noqa: E402

LAB = {"LAB_NAME": "sdroll", "LAB_API_PORT": "8798", "LAB_SUBNET": "10.80.0.0/24"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    parser.add_argument("--repeat", type=int, default=0, help="api-only roll-forwards after the scenarios")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sdroll-"))
    stack = tmp / "stack"
    shutil.copytree(REPO / "stack", stack, ignore=shutil.ignore_patterns("node_modules", "dist", "__pycache__", ".env"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN", "DOMAIN", "DEPLOY_", "SSH_"))}
    # The prober's /api traffic must not exhaust its own rate-limit bucket.
    env.update(LAB, LAB_STATE_DIR=str(tmp / "lab"), LOGS_DIR=str(tmp / "runs"), STACK_DIR=str(stack),
               SSH_KNOWN_HOSTS=str(tmp / "known_hosts"), CHECK_RATE_LIMIT="false", RATE_LIMIT_API_RPM="1200")

    def inv(*argv: str, env_file: bool = True, ok: bool = True) -> tuple[float, subprocess.CompletedProcess]:
        cmd = [sys.executable, "-m", "invoke", *argv] + (["--env-file", str(tmp / "lab.env")] if env_file else [])
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if ok and res.returncode != 0:
            print(res.stdout[-3000:], res.stderr[-2000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"`inv {' '.join(argv)}` failed with exit {res.returncode}")
        return time.monotonic() - t0, res

    def last_run() -> dict:
        return json.loads((sorted((tmp / "runs").iterdir())[-1] / "run.json").read_text())

    def probed(name: str, *argv: str, ok: bool = True) -> dict:
        since = int(time.time())
        with Prober(ip, domain, DEFAULT_ROUTES) as prober:
            seconds, res = inv(*argv, ok=ok)
        summary = prober.report.summary()
        failures = [(p.route, p.at, p.status, p.error) for p in prober.report.failed]
        if failures:   # at once: the edge's log is read before the next scenario adds to it
            print(f"--- {name}: {failures}\n{edge_errors(since)}", flush=True)
        return {"scenario": name, "exit": res.returncode, "seconds": seconds, **summary, "failures": failures,
                "replaced": last_run()["details"].get("up", {}).get("replaced", [])}

    def edge_errors(since: int) -> str:
        """Traefik's lines since ``since`` about failed requests: 5xx access-log lines and errors."""
        droplet = subprocess.run(["docker", "ps", "-q", "--filter", f"label=stackdeploy.lab={LAB['LAB_NAME']}",
                                  "--filter", "label=stackdeploy.lab.kind=droplet"],
                                 capture_output=True, text=True).stdout.split()
        if not droplet:
            return "(no lab droplet running)"
        script = ("docker logs --since %d $(docker ps -q --filter label=com.docker.compose.service=traefik) 2>&1"
                  % since)
        out = subprocess.run(["docker", "exec", droplet[0], "sh", "-c", script], capture_output=True, text=True).stdout
        return "\n".join(line for line in out.splitlines()
                         if '"DownstreamStatus":5' in line or "ERR" in line or "WRN" in line)

    def bump_api(version: str) -> None:
        init = stack / "api" / "app" / "__init__.py"
        init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', init.read_text()))

    try:
        inv("lab.up", env_file=False)
        (tmp / "lab.env").write_text(inv("lab.env", env_file=False)[1].stdout)
        inv("deploy")
        target = last_run()["target"]
        ip, domain = target["ip"], dict(line.split("=", 1) for line in (tmp / "lab.env").read_text().splitlines()
                                        if "=" in line and not line.startswith("#"))["DOMAIN"]
        rows = []
        bump_api("1.0.1")
        settings = stack / "django" / "config" / "settings.py"
        settings.write_text(settings.read_text() + "\n# release 1.0.1\n")
        index = stack / "frontend" / "index.html"
        index.write_text(index.read_text().replace("</body>", "<!-- release 1.0.1 --></body>"))
        rows.append(probed("(a) update-only: api, django, frontend", "deploy", "--update-only"))
        forward = last_run()["details"]["push"]["release_id"]
        rows.append(probed("(b) rollback", "rollback"))
        rows.append(probed("(b') roll forward by id", "rollback", "--release", forward))
        main_py = stack / "api" / "app" / "main.py"
        good = main_py.read_text()
        main_py.write_text(good + "\nraise SystemExit('this release cannot start')\n")
        rows.append(probed("(c) api never healthy", "deploy", "--update-only", ok=False))
        main_py.write_text(good)
        for n in range(args.repeat):
            bump_api(f"1.1.{n}")
            rows.append(probed(f"(r{n}) update-only: api", "deploy", "--update-only"))
        print(f"{'scenario':42} {'exit':>4} {'wall s':>7} {'sent':>6} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7}  replaced")
        for r in rows:
            print(f"{r['scenario']:42} {r['exit']:4d} {r['seconds']:7.1f} {r['sent']:6d} {r['failed']:6d} "
                  f"{r['p50_ms']:7.1f} {r['p99_ms']:7.1f}  {','.join(r['replaced']) or '-'}")
        for r in rows:
            if r["failed"]:
                print(f"failures in {r['scenario']}: " + json.dumps(r["routes"]))
        return 0
    finally:
        if not args.keep:
            inv("lab.down", env_file=False, ok=False)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
