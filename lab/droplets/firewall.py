"""DigitalOcean inbound firewall rules -> iptables commands run inside the droplet.

Filtering happens in the mangle table's PREROUTING for traffic arriving on eth0 (the
droplet's "public" interface) and eth1 (its VPC: a DigitalOcean Cloud Firewall filters private
traffic too). That is before Docker's DNAT, so a port published by the
inner engine (Traefik on 80/443) is filtered by its original port exactly like a cloud
firewall would, while traffic between the droplet's own containers (docker0, br-*)
and loopback never enters the chain.
"""
from __future__ import annotations

import ipaddress
import shlex

CHAIN = "LAB-FW"
PUBLIC_IF = "eth0"
VPC_IF = "eth1"


def _ports(rule: dict) -> list[str]:
    """DO `ports`: "22", "8000-9000", "0"/"all"/"" (every port) -> iptables dport args."""
    ports = str(rule.get("ports") or "all").strip().lower()
    if ports in ("0", "all", "1-65535"):
        return []
    return ["--dport", ports.replace("-", ":")]


DropletIps = dict[int, "str | list[str]"]   # droplet id -> its address(es) on the lab's networks


def _addresses(droplet_ips: DropletIps, droplet_id: int) -> list[str]:
    ips = droplet_ips.get(droplet_id) or []
    return [ips] if isinstance(ips, str) else list(ips)


def _sources(rule: dict, droplet_ips: DropletIps, tagged: dict[str, list[int]]) -> list[str]:
    """The IPv4 sources a rule admits: its addresses, the droplets it names and the droplets
    carrying the tags it names (each droplet by every address it has; one unknown here, e.g.
    not built yet, admits nothing until the API applies the rules again)."""
    src = rule.get("sources") or {}
    out = []
    for addr in src.get("addresses") or []:
        net = ipaddress.ip_network(addr, strict=False)
        if net.version == 4:          # the lab network is IPv4 only
            out.append(str(net))
    ids = list(src.get("droplet_ids") or [])
    ids += [i for tag in src.get("tags") or [] for i in tagged.get(tag) or []]
    for droplet_id in dict.fromkeys(ids):
        out += [f"{ip}/32" for ip in _addresses(droplet_ips, droplet_id) if f"{ip}/32" not in out]
    return out


def rule_lines(inbound_rules: list[dict], droplet_ips: DropletIps | None = None,
               tagged: dict[str, list[int]] | None = None) -> list[list[str]]:
    """The iptables argument lists for the chain body (after it is flushed). ``tagged``: the
    droplet ids carrying each tag a rule's sources name (as the fake API reports them)."""
    if not inbound_rules:
        return []                       # no firewall attached: everything open
    droplet_ips, tagged = droplet_ips or {}, tagged or {}
    lines = [["-A", CHAIN, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]]
    for rule in inbound_rules:
        proto = str(rule.get("protocol", "tcp")).lower()
        if proto not in ("tcp", "udp", "icmp"):
            raise ValueError(f"firewall protocol {proto!r} is not tcp, udp or icmp")
        ports = [] if proto == "icmp" else _ports(rule)
        for src in _sources(rule, droplet_ips, tagged):
            lines.append(["-A", CHAIN, "-p", proto, "-s", src, *ports, "-j", "RETURN"])
    lines.append(["-A", CHAIN, "-j", "DROP"])
    return lines


def script(inbound_rules: list[dict], droplet_ids: DropletIps | None = None,
           tagged: dict[str, list[int]] | None = None) -> str:
    """A shell script that (re)installs the chain; idempotent. One at a time per machine (flock):
    the fake API applies rules from several threads, and a flush landing between another run's
    lines would leave that run's final DROP ahead of the rules."""
    ipt = "iptables -w -t mangle"
    cmds = [
        "set -e",
        "exec 9>/run/lab-firewall.lock",
        "flock 9",
        f"{ipt} -N {CHAIN} 2>/dev/null || true",
        f"{ipt} -F {CHAIN}",
    ]
    cmds += [f"{ipt} -C PREROUTING -i {nic} -j {CHAIN} 2>/dev/null || {ipt} -I PREROUTING 1 -i {nic} -j {CHAIN}"
             for nic in (PUBLIC_IF, VPC_IF)]
    cmds += [f"{ipt} {shlex.join(line)}" for line in rule_lines(inbound_rules, droplet_ids, tagged)]
    return "\n".join(cmds) + "\n"
