"""`inv lab.*`: a local DigitalOcean (fake API + droplet containers) to deploy into.

Settings come from invoke.yaml's `lab:` section and LAB_* variables; flags win.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from lab import config as labconfig
from lab import control
from lab.errors import LabError


def _cfg(c: Context, **flags: Any) -> labconfig.LabConfig:
    """invoke.yaml `lab:` < LAB_* environment < flags, validated in one place."""
    section = dict(c.config.get("lab", None) or {})
    environ = dict(os.environ)
    environ.update({labconfig.DEFAULTS[k][0]: str(v) for k, v in flags.items() if v is not None})
    return labconfig.load(section, environ=environ)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _guard(fn):
    try:
        return fn()
    except LabError as exc:
        raise Exit(f"lab: {exc}", code=2) from None


@task(help={"port": "Port of the fake DigitalOcean API on 127.0.0.1 (lab.api_port, LAB_API_PORT; default 8777)",
            "subnet": "Private network for droplets (lab.subnet, LAB_SUBNET; default 10.77.0.0/24)",
            "images": "`standin` builds the stack's images from Debian packages; `pull` uses Docker Hub",
            "name": "Lab name: prefix and label value of everything it creates (default stackdeploy-lab)"})
def up(c, port=None, subnet=None, images=None, name=None):
    """Build/reuse the lab images, start the fake DigitalOcean API, its services and the droplet network."""
    cfg = _guard(lambda: _cfg(c, api_port=port, subnet=subnet, images=images, name=name))
    _guard(lambda: control.up(cfg, log=_err))


@task(help={"json_": "Print the status as JSON"})
def status(c, json_=False):
    """Show each lab service (API, DNS, Pebble, registry, S3) and droplet: running, restarting, exited or missing."""
    cfg = _guard(lambda: _cfg(c))
    st = _guard(lambda: control.status(cfg))
    if json_:
        print(json.dumps(st, indent=2))
        return
    for line in status_lines(st):
        print(line)
    missing = [t for t, ok in st["images"].items() if not ok]
    print("images: all built" if not missing else f"images missing: {', '.join(missing)}")
    for line in status_fixes(st):
        print(line)


API_STATES = {"running": "running at {url} (pid {pid})",
              "not answering": "not answering (pid {pid}; its log: {log})",
              "exited": "exited (pid {pid} is gone; its log: {log})",
              "stray": "running without its state folder (pid {pid})",
              "missing": "missing (never started, or `inv lab.down`)"}


def status_lines(st: dict[str, Any]) -> list[str]:
    """One line per lab service (the API, DNS, Pebble, registry, S3), then per droplet."""
    from lab.services.containers import summary
    lines = ["API: " + API_STATES[st["api"]["state"]].format(**st["api"])]
    for role, svc in st["services"].items():
        if role == "s3":
            continue
        lines.append(f"{svc['what']}: {summary(svc)} ({svc['container']})")
    s3 = st["services"]["s3"]
    lines.append(f"S3: https://{st['s3']['endpoint']}/{st['s3']['bucket']} ({summary(s3)})")
    lines.append(f"network: {st['network']} ({'present' if st['network_exists'] else 'missing'})")
    for d in st["droplets"]:
        unknown = " (not known to the lab API)" if d["id"] in st["unknown_droplets"] else ""
        lines.append(f"droplet {d['id']}: {d['hostname']} {d['ip']} {summary(d)} ({d['container']}){unknown}")
    if not st["droplets"]:
        lines.append("droplets: none")
    return lines


def status_fixes(st: dict[str, Any]) -> list[str]:
    """What to run when something is not as `inv lab.up` leaves it."""
    fixes = []
    if st["unknown_droplets"]:
        fixes.append("fix: droplets " + ", ".join(map(str, st["unknown_droplets"])) + " remain from a "
                     "removed state folder; `inv lab.down` removes them (and what was deployed on "
                     "them) and the rest of the lab, then `inv lab.up`")
    elif st["api"]["state"] == "missing" and all(s["state"] == "missing" for s in st["services"].values()):
        fixes.append("the lab is not up: `inv lab.up` starts it")
    elif st["api"]["state"] != "running" or any(s["state"] != "running" or s["restarts"]
                                                 for s in st["services"].values()):
        fixes.append("fix: `inv lab.up` replaces the lab services that are not running and restarts the API")
    return fixes


@task(help={"purge_images": "Also remove the lab-built images (the next lab.up rebuilds them)"})
def down(c, purge_images=False):
    """Stop the API and remove every container, volume and network this lab made."""
    cfg = _guard(lambda: _cfg(c))
    _guard(lambda: control.down(cfg, purge_images=purge_images, log=_err))


@task
def env(c):
    """Print KEY=VALUE lines for `inv deploy --env-file` (save them: `inv lab.env > .env.lab`)."""
    from lab.stackenv import format_env
    cfg = _guard(lambda: _cfg(c))
    values = _guard(lambda: control.env_values(cfg))
    print("# stackdeploy lab: deploy with `inv deploy --env-file <this file>`")
    if any(k.endswith("BASIC_AUTH") for k in values):
        print(f"# dashboards (flower/admin): user admin, password in {cfg.state_dir}/dashboard-password")
    sys.stdout.write(format_env(values))


ns = Collection("lab")
for _t in (up, status, down, env):
    ns.add_task(_t)
