"""provision -> push -> up -> verify -> collect. Each step takes what it needs and returns a
value; the Run records it. Full deploy and update-only differ only in which steps run."""
from __future__ import annotations

import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from deploy.errors import NotBuilt
from deploy.run import Run
from deploy.settings import Settings


def _public_key(settings: Settings) -> str:
    from deploy.errors import ConfigError

    key = settings.ssh_key_path
    pub = Path(str(key) + ".pub")
    if not key.is_file():
        raise ConfigError("SSH_KEY_PATH", f"points to {key}, which does not exist",
                          f"create a key with: ssh-keygen -t ed25519 -f {key} -N '' (or set SSH_KEY_PATH to your key)")
    if not pub.is_file():
        raise ConfigError("SSH_KEY_PATH", f"has no public key beside it ({pub})",
                          f"write it with: ssh-keygen -y -f {key} > {pub}")
    return pub.read_text(encoding="utf-8").strip()


def cloud_spec(settings: Settings, need_key: bool = True):
    from deploy import cloud

    s = settings
    return cloud.CloudSpec(
        token=s.token.reveal() if s.token else "",
        droplet_name=s["DROPLET_NAME"],
        region=s["DROPLET_REGION"],
        size=s["DROPLET_SIZE"],
        image=s["DROPLET_IMAGE"],
        tags=tuple(s["DROPLET_TAGS"] or ()),
        ssh_public_key=_public_key(s) if need_key else "",
        ssh_key_name=f"{s.project}-{s['DEPLOY_USER']}",
        deploy_user=s["DEPLOY_USER"],
        domain=s["DOMAIN"],
        subdomains=tuple(s["SUBDOMAINS"] or ()),
        firewall_enabled=not s["SKIP_ALLOWLIST"],
        operator_ip_url=s["OPERATOR_IP_URL"],
        operator_ip_timeout=s["OPERATOR_IP_TIMEOUT"],
        extra_ssh_cidrs=tuple(s["ALLOWLIST_EXTRA_CIDRS"] or ()),
        request_timeout=s["DO_REQUEST_TIMEOUT"],
        active_timeout=s["DO_ACTIVE_TIMEOUT"],
        ssh_wait_timeout=s["DO_SSH_WAIT_TIMEOUT"],
        max_retries=s["DO_MAX_RETRIES"],
        endpoint=s["DIGITALOCEAN_END_POINT"],
    )


def _data(value: Any) -> Any:
    return asdict(value) if is_dataclass(value) else value


def provision(run: Run, settings: Settings) -> Any:
    """Token check first (fail fast), then droplet, firewall allowlist and DNS."""
    from deploy import cloud

    settings.require("DIGITALOCEAN_TOKEN", "DOMAIN")
    spec = cloud_spec(settings)
    with run.step("token-check") as step:
        account = cloud.check_token(spec)
        step.note(f"account {account.email}")
    with run.step("provision") as step:
        result = cloud.provision(spec, on_event=lambda level, msg: run.warn(msg) if level == "warning" else run.log(msg))
        d = result.droplet
        run.target = {"name": d.name, "region": d.region, "ip": d.public_ipv4, "droplet_id": d.id}
        run.details["provision"] = _data(result)
        for warning in result.warnings:
            run.warn(warning)
        step.note(("created" if d.created else "found") + f" droplet {d.name} ({d.public_ipv4 or 'no public IPv4'});"
                  f" firewall {result.firewall.status}; dns {result.dns.status}")
        if result.warnings:
            step.warn(step.step.message)
    run.artifacts.write_json("provision.json", _data(result))
    return result


def provision_only(run: Run, settings: Settings) -> None:
    provision(run, settings)


def deploy(run: Run, settings: Settings, update_only: bool = False) -> None:
    raise NotBuilt("deploy is not built yet: provisioning works (inv provision); push/up/verify land next",
                   "use `inv provision` for now")


def push_only(run: Run, settings: Settings) -> None:
    raise NotBuilt("push is not built yet", "use `inv provision` for now")


def up_only(run: Run, settings: Settings) -> None:
    raise NotBuilt("up is not built yet", "use `inv provision` for now")


def verify_only(run: Run, settings: Settings) -> None:
    raise NotBuilt("verify is not built yet", "use `inv provision` for now")


def collect_only(run: Run, settings: Settings) -> None:
    raise NotBuilt("collect is not built yet", "use `inv provision` for now")
