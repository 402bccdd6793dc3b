"""Lab settings: invoke.yaml `lab:` section, then LAB_* environment variables, validated once."""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.images.recipes import STANDINS

# setting -> (environment variable, default)
DEFAULTS: dict[str, tuple[str, Any]] = {
    "name": ("LAB_NAME", "stackdeploy-lab"),
    "subnet": ("LAB_SUBNET", "10.77.0.0/24"),
    "api_port": ("LAB_API_PORT", 8777),
    "state_dir": ("LAB_STATE_DIR", ".lab"),
    "images": ("LAB_IMAGES", "standin"),
    "debian_mirror": ("LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
    "domain": ("LAB_DOMAIN", "app.lab.test"),
    "preload": ("LAB_PRELOAD", ",".join(STANDINS)),
    # The droplets' VPC (their private addresses, eth1). Empty: derived from the subnet (see
    # LabConfig.vpc), so labs with their own subnet get their own VPC.
    "vpc_subnet": ("LAB_VPC_SUBNET", ""),
}


@dataclass(frozen=True)
class LabConfig:
    name: str = DEFAULTS["name"][1]
    subnet: str = DEFAULTS["subnet"][1]
    api_port: int = DEFAULTS["api_port"][1]
    state_dir: Path = Path(DEFAULTS["state_dir"][1])
    images: str = DEFAULTS["images"][1]
    debian_mirror: str = DEFAULTS["debian_mirror"][1]
    domain: str = DEFAULTS["domain"][1]
    # images loaded into every droplet's engine at creation (empty: none)
    preload: tuple[str, ...] = field(default_factory=lambda: tuple(STANDINS))
    vpc_subnet: str = ""

    @property
    def vpc(self) -> str:
        """The VPC's CIDR: vpc_subnet, else 10.<second octet + 100>.<third octet>.0 with the
        subnet's prefix (10.77.0.0/24 -> 10.177.0.0/24): private, and apart from the subnet."""
        if self.vpc_subnet:
            return self.vpc_subnet
        net = ipaddress.ip_network(self.subnet)
        _, b, c, d = net.network_address.packed
        return str(ipaddress.ip_network(f"10.{(b + 100) % 256}.{c}.{d}/{net.prefixlen}", strict=False))

    @property
    def vpc_network(self) -> str:
        return f"{self.name}-vpc"

    @property
    def network(self) -> str:
        return f"{self.name}-net"

    @property
    def gateway(self) -> str:
        """The address droplets see the host's connections come from."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def _last_hosts(self) -> list[str]:
        """The subnet's highest addresses: Docker hands out the lowest ones to droplets."""
        net = ipaddress.ip_network(self.subnet)
        return [str(net.broadcast_address - i) for i in (1, 2)]

    @property
    def dns_ip(self) -> str:
        """The lab's DNS server (knot), authoritative for the fake API's domains."""
        return self._last_hosts()[0]

    @property
    def pebble_ip(self) -> str:
        """Pebble, the lab's ACME test CA."""
        return self._last_hosts()[1]

    @property
    def label(self) -> str:
        """Label every lab object carries; `lab.down` removes exactly these."""
        return f"stackdeploy.lab={self.name}"

    def to_env(self) -> dict[str, str]:
        """The same settings as LAB_* variables, for the background API process."""
        return {DEFAULTS[k][0]: (",".join(v) if isinstance(v, tuple) else str(v))
                for k, v in ((k, getattr(self, k)) for k in DEFAULTS)}


def _fail(key: str, value: Any, why: str) -> LabError:
    env = DEFAULTS[key][0]
    return LabError(f"lab setting `{key}` ({env}) = {value!r} {why}; set lab.{key} in invoke.yaml "
                    f"or {env} in the environment")


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> LabConfig:
    """Defaults < invoke.yaml `lab:` section (overrides) < LAB_* environment."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {k: d for k, (_, d) in DEFAULTS.items()}
    raw.update({k: v for k, v in (overrides or {}).items() if k in DEFAULTS and v is not None})
    raw.update({k: environ[env] for k, (env, _) in DEFAULTS.items() if env in environ})

    name = str(raw["name"])
    if not name.replace("-", "").isalnum() or not name[0].isalpha():
        raise _fail("name", name, "must be letters, digits and dashes, starting with a letter")
    try:
        net = ipaddress.ip_network(str(raw["subnet"]), strict=True)
    except ValueError as exc:
        raise _fail("subnet", raw["subnet"], f"is not a network in CIDR form ({exc})") from None
    if net.version != 4 or net.prefixlen > 28:
        raise _fail("subnet", raw["subnet"], "must be an IPv4 network of /28 or larger")
    try:
        port = int(raw["api_port"])
        if not 1 <= port <= 65535:
            raise ValueError
    except (TypeError, ValueError):
        raise _fail("api_port", raw["api_port"], "must be a TCP port number 1-65535") from None
    if raw["images"] not in ("standin", "pull"):
        raise _fail("images", raw["images"], "must be `standin` (build from Debian packages) "
                                             "or `pull` (Docker Hub reachable)")
    vpc = str(raw["vpc_subnet"] or "")
    if vpc:
        try:
            vnet = ipaddress.ip_network(vpc, strict=True)
        except ValueError as exc:
            raise _fail("vpc_subnet", vpc, f"is not a network in CIDR form ({exc})") from None
        if vnet.version != 4 or vnet.prefixlen > 28 or vnet.overlaps(net):
            raise _fail("vpc_subnet", vpc, f"must be an IPv4 network of /28 or larger, apart from {net}")
    preload = raw["preload"]
    if isinstance(preload, str):
        preload = [p.strip() for p in preload.split(",") if p.strip()]
    return LabConfig(name=name, subnet=str(net), api_port=port, state_dir=Path(str(raw["state_dir"])),
                     images=str(raw["images"]), debian_mirror=str(raw["debian_mirror"]),
                     domain=str(raw["domain"]), preload=tuple(preload), vpc_subnet=vpc)


__all__ = ["LabConfig", "load", "replace"]
