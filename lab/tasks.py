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
    """Show the lab API, its S3 endpoint, its droplets (id, IP, state) and which images are built."""
    cfg = _guard(lambda: _cfg(c))
    st = _guard(lambda: control.status(cfg))
    if json_:
        print(json.dumps(st, indent=2))
        return
    print(f"API: {'running at ' + st['api_url'] if st['api_running'] else 'not running'}")
    print(f"network: {st['network']} ({'present' if st['network_exists'] else 'absent'})")
    print(f"S3: https://{st['s3']['endpoint']}/{st['s3']['bucket']} ({st['s3']['state']})")
    for d in st["droplets"]:
        print(f"droplet {d['id']}: {d['hostname']} {d['ip']} {d['state']} ({d['container']})")
    if not st["droplets"]:
        print("droplets: none")
    missing = [t for t, ok in st["images"].items() if not ok]
    print("images: all built" if not missing else f"images missing: {', '.join(missing)}")


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
