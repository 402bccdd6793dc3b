"""The lab's Docker networks: the "public" one (droplets' public IPv4, eth0) and the VPC (their
private IPv4, eth1), each a bridge the host is the gateway of."""
from __future__ import annotations

import ipaddress
import threading

from lab.config import LabConfig
from lab.docker import docker, inspect
from lab.errors import LabError

_lock = threading.Lock()


def _ensure_bridge(cfg: LabConfig, name: str, subnet: str, kind: str, setting: str) -> str:
    """Create the bridge if missing; return its gateway. A network of that name with another
    subnet is an error, not reused."""
    gateway = str(next(ipaddress.ip_network(subnet).hosts()))
    with _lock:
        info = inspect("network", name)
        if info is None:
            try:
                docker("network", "create", "--driver", "bridge", "--subnet", subnet,
                       "--gateway", gateway, "--label", cfg.label,
                       "--label", f"stackdeploy.lab.kind={kind}", name)
            except LabError as exc:
                if "overlap" in str(exc).lower():
                    raise LabError(f"lab setting `{setting.lower().removeprefix('lab_')}` ({setting}) = {subnet} "
                                   f"overlaps an existing Docker network or route; choose a free private "
                                   f"range, e.g. {setting}=10.78.0.0/24") from None
                raise
            info = inspect("network", name)
        configs = (info.get("IPAM") or {}).get("Config") or []
        if not any(c.get("Subnet") == subnet for c in configs):
            have = ", ".join(c.get("Subnet", "?") for c in configs)
            raise LabError(f"Docker network {name} exists with subnet {have}, not {subnet} ({setting}): "
                           f"run `inv lab.down` first or set {setting}={have}")
        return gateway


def ensure_network(cfg: LabConfig) -> str:
    """The public network; returns its gateway (the operator's address as seen from droplets)."""
    return _ensure_bridge(cfg, cfg.network, cfg.subnet, "network", "LAB_SUBNET")


def ensure_vpc(cfg: LabConfig) -> str:
    """The droplets' VPC: private addresses only droplets (and the host, as its gateway) reach."""
    return _ensure_bridge(cfg, cfg.vpc_network, cfg.vpc, "vpc", "LAB_VPC_SUBNET")
