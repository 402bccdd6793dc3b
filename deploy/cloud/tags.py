"""The tags stackdeploy writes on droplets, in DigitalOcean's tag alphabet: the cluster tag
every node carries, and each operator's presence (their address, announced for the allowlist).
Pure: no API call."""
from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass

# --- the cluster tag ------------------------------------------------------------------------
CLUSTER_SUFFIX = "-swarm"


def cluster_tag(droplet_name: str) -> str:
    """The tag every node of the cluster named ``droplet_name`` carries: the name in
    DigitalOcean's tag alphabet (letters, digits, '-', '_', ':'; at most 255) plus "-swarm"."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", droplet_name)[:255 - len(CLUSTER_SUFFIX)] + CLUSTER_SUFFIX


# --- an operator's presence (deploy/cloud/allowlist.py makes the SSH allowlist from them) ---
PRESENCE_PREFIX = "stackdeploy-ssh:"


@dataclass(frozen=True)
class Presence:
    address: str
    since: int          # unix seconds, by the announcing machine's clock
    who: str            # user@host in the tag alphabet
    tag: str


def now_s() -> int:
    return int(time.time())


def _tag_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "_", text)[:80] or "unknown"


def presence_tag(address: str, since: int, who: str) -> str:
    """stackdeploy-ssh:<address>:<unix seconds>:<who>, in DigitalOcean's tag alphabet (letters,
    digits, '-', '_', ':'): an IPv4 address's dots become '-', an IPv6 address's colons '_'."""
    encoded = str(ipaddress.ip_address(address)).replace(".", "-").replace(":", "_")
    return f"{PRESENCE_PREFIX}{encoded}:{int(since)}:{_tag_safe(who)}"


def parse_presence(tag: str) -> Presence | None:
    if not tag.startswith(PRESENCE_PREFIX):
        return None
    encoded, _, rest = tag[len(PRESENCE_PREFIX):].partition(":")
    since, _, who = rest.partition(":")
    address = encoded.replace("_", ":") if "_" in encoded else encoded.replace("-", ".")
    try:
        return Presence(str(ipaddress.ip_address(address)), int(since), who, tag)
    except ValueError:
        return None
