"""The lab's private Docker network: droplets get their "public" IPv4 on it."""
from __future__ import annotations

import threading

from lab.config import LabConfig
from lab.docker import docker, inspect
from lab.errors import LabError

_lock = threading.Lock()


def ensure_network(cfg: LabConfig) -> str:
    """Create the lab network if missing; return its gateway (the operator's address as seen
    from droplets). A network of that name with another subnet is an error, not reused."""
    with _lock:
        info = inspect("network", cfg.network)
        if info is None:
            try:
                docker("network", "create", "--driver", "bridge", "--subnet", cfg.subnet,
                       "--gateway", cfg.gateway, "--label", cfg.label,
                       "--label", "stackdeploy.lab.kind=network", cfg.network)
            except LabError as exc:
                if "overlap" in str(exc).lower():
                    raise LabError(f"lab setting `subnet` (LAB_SUBNET) = {cfg.subnet} overlaps an "
                                   f"existing Docker network or route; choose a free private range, "
                                   f"e.g. LAB_SUBNET=10.78.0.0/24") from None
                raise
            info = inspect("network", cfg.network)
        configs = (info.get("IPAM") or {}).get("Config") or []
        if not any(c.get("Subnet") == cfg.subnet for c in configs):
            have = ", ".join(c.get("Subnet", "?") for c in configs)
            raise LabError(f"Docker network {cfg.network} exists with subnet {have}, not "
                           f"{cfg.subnet} (lab setting `subnet`, LAB_SUBNET): run `inv lab.down` "
                           f"first or set LAB_SUBNET={have}")
        return cfg.gateway
