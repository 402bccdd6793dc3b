"""The Cloud Firewall named after the droplet: its rules (SSH from the operators, web from
anywhere, the Swarm ports between a cluster's nodes), compared with what is there, and written."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import digitalocean
import requests

from deploy.cloud.api import CloudError, CloudSpec, OnEvent, _call, _manager

ANYWHERE = ("0.0.0.0/0", "::/0")
# IPv6 is off (README, Security): Docker's networks here are IPv4-only, so IPv6 clients would
# reach Traefik as one bridge address and share one rate-limit bucket and allowlist identity.
# Droplets are created without IPv6, only A records are made, and 80/443 admit IPv4 only
# (which also closes IPv6 on a droplet an older release created with it).
WEB_SOURCES = ("0.0.0.0/0",)


@dataclass(frozen=True)
class FirewallResult:
    status: str                 # created | updated | unchanged | skipped
    operator_ip: str | None
    rules: list[dict]           # the inbound rules now in force ([] when skipped)


def discover_operator_ip(url: str, timeout: float) -> str:
    """The operator's public IP as seen by `url` (plain-text answer)."""
    try:
        resp = requests.get(url, timeout=timeout)
        resp.raise_for_status()
        return str(ipaddress.ip_address(resp.text.strip()))
    except (requests.RequestException, ValueError) as exc:
        reason = type(exc).__name__ if not isinstance(exc, ValueError) else "answer is not an IP"
        raise CloudError(f"could not discover your public IP from {url} ({reason})",
                         "check your network, set OPERATOR_IP_URL to a service answering with "
                         "your IP, or use --skip-allowlist and manage the firewall yourself"
                         ) from None


def _as_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{32 if ip.version == 4 else 128}"


def firewall_rules(operator_ips: list[str], extra_cidrs: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """(inbound, outbound): web open to all, SSH only from the operators + extra CIDRs."""
    ssh_sources = [_as_cidr(ip) for ip in operator_ips]
    for cidr in extra_cidrs:
        try:
            net = str(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise CloudError(f"extra SSH CIDR {cidr!r} is not an IP network",
                             "fix allowlist.extra_ssh_cidrs, e.g. 203.0.113.0/24") from None
        if net not in ssh_sources:
            ssh_sources.append(net)
    inbound = [{"protocol": "tcp", "ports": "22", "sources": {"addresses": ssh_sources}},
               {"protocol": "tcp", "ports": "80", "sources": {"addresses": list(WEB_SOURCES)}},
               {"protocol": "tcp", "ports": "443", "sources": {"addresses": list(WEB_SOURCES)}}]
    # DigitalOcean drops all egress a firewall does not allow: the droplet must still pull
    # packages and images and resolve names.
    outbound = [{"protocol": p, "ports": "all", "destinations": {"addresses": list(ANYWHERE)}}
                for p in ("tcp", "udp", "icmp")]
    return inbound, outbound


# Docker Swarm's ports: cluster management (manager), node gossip, overlay network traffic (VXLAN).
SWARM_PORTS = (("tcp", "2377"), ("tcp", "7946"), ("udp", "7946"), ("udp", "4789"))


def swarm_rules(cluster: str) -> list[dict]:
    """Inbound rules opening the Swarm ports to the droplets carrying the tag ``cluster`` and to
    nothing else: the source is the tag, never an address (so never 0.0.0.0/0), and it follows
    the nodes as they are added or removed. A Cloud Firewall filters the VPC's traffic too, so
    without these rules nodes could not reach each other's Swarm ports even privately. (An
    encrypted overlay would need ESP, which a Cloud Firewall cannot admit: don't use one.)"""
    return [{"protocol": protocol, "ports": ports, "sources": {"tags": [cluster]}}
            for protocol, ports in SWARM_PORTS]


# Every kind of source/destination DigitalOcean documents for a firewall rule.
_TARGET_KINDS = ("addresses", "droplet_ids", "load_balancer_uids", "kubernetes_ids", "tags")


def _rule_key(rules: list[dict], side: str) -> frozenset:
    def ports(rule: dict) -> str:
        value = str(rule.get("ports") or "all")
        return "all" if rule.get("protocol") == "icmp" or value in ("0", "all", "1-65535") else value
    return frozenset((r.get("protocol"), ports(r),
                      *(frozenset((r.get(side) or {}).get(kind) or []) for kind in _TARGET_KINDS))
                     for r in rules)


@dataclass(frozen=True)
class _FirewallState:
    """Our firewall as the API lists it, compared with the rules this run wants (reads only)."""

    operator_ip: str
    inbound: list[dict]
    outbound: list[dict]
    current: dict | None        # the firewall named after the droplet, None when there is none
    same_rules: bool
    attached: bool

    @property
    def action(self) -> str:
        """What provision does about it: create | update | attach | unchanged."""
        if self.current is None:
            return "create"
        if not self.same_rules:
            return "update"
        return "unchanged" if self.attached else "attach"


def _compare(operator_ip: str, inbound: list[dict], outbound: list[dict], current: dict | None,
             droplet_id: int | None, tag: str | None = None) -> _FirewallState:
    """``tag``: the firewall is to be attached by that tag (a cluster), else to ``droplet_id``."""
    if current is None:
        return _FirewallState(operator_ip, inbound, outbound, None, False, False)
    same_rules = (_rule_key(current.get("inbound_rules") or [], "sources") == _rule_key(inbound, "sources")
                  and _rule_key(current.get("outbound_rules") or [], "destinations")
                  == _rule_key(outbound, "destinations"))
    if tag is not None:
        attached = tag in (current.get("tags") or [])
    else:
        attached = droplet_id is not None and droplet_id in (current.get("droplet_ids") or [])
    return _FirewallState(operator_ip, inbound, outbound, current, same_rules, attached)


def _named_firewalls(spec: CloudSpec, on_event: OnEvent) -> list[dict]:
    """Firewalls named after the droplet, oldest first."""
    listed = _call(spec, "listing firewalls", lambda: _manager(spec).get_data("firewalls")["firewalls"], on_event)
    return sorted((fw for fw in listed if fw.get("name") == spec.droplet_name),
                  key=lambda fw: (fw.get("created_at") or "", fw.get("id") or ""))


def _firewall_state(spec: CloudSpec, droplet_id: int | None, on_event: OnEvent) -> _FirewallState:
    """For the plan: this operator's rules against the firewall as it is. ``droplet_id`` None:
    the droplet does not exist yet (so nothing is attached to it)."""
    operator_ip = discover_operator_ip(spec.operator_ip_url, spec.operator_ip_timeout)
    inbound, outbound = firewall_rules([operator_ip], spec.extra_ssh_cidrs)
    mine = _named_firewalls(spec, on_event)
    return _compare(operator_ip, inbound, outbound, mine[0] if mine else None, droplet_id)


def _ensure_firewall(spec: CloudSpec, droplet_id: int, operator_ip: str, allowed: list[str],
                     on_event: OnEvent, cluster: str | None = None) -> FirewallResult:
    """The firewall named after the droplet, with SSH from the ``allowed`` operators only.
    ``cluster``: the cluster tag; the Swarm ports open between the droplets carrying it, and
    the firewall is attached by it (every node, and a node added later from its creation)."""
    inbound, outbound = firewall_rules(allowed, spec.extra_ssh_cidrs)
    if cluster is not None:
        inbound += swarm_rules(cluster)
    who = ", ".join(allowed)

    def named() -> list[dict]:
        return _named_firewalls(spec, on_event)
    mine = named()
    for extra in mine[1:]:  # a duplicate keeps its own SSH rule (old addresses): keep the oldest only
        _call(spec, "deleting a duplicate firewall",
              digitalocean.Firewall(token=spec.token, id=extra["id"]).destroy, on_event, missing_ok=True)
        on_event("warning", f"deleted duplicate firewall {extra['id']} named {spec.droplet_name}")
    state = _compare(operator_ip, inbound, outbound, mine[0] if mine else None, droplet_id, cluster)
    current = state.current
    if current is None:
        fw = digitalocean.Firewall(
            token=spec.token, name=spec.droplet_name, droplet_ids=[] if cluster else [droplet_id],
            tags=[cluster] if cluster else [],
            inbound_rules=[digitalocean.InboundRule(r["protocol"], r["ports"],
                                                    digitalocean.Sources(**r["sources"]))
                           for r in inbound],
            outbound_rules=[digitalocean.OutboundRule(r["protocol"], r["ports"],
                                                      digitalocean.Destinations(**r["destinations"]))
                            for r in outbound])
        # After a lost answer the firewall may exist: a second one would keep its own SSH rule.
        _call(spec, "creating the firewall", fw.create, on_event,
              before_retry=lambda: named() or None)
        on_event("info", f"created firewall {spec.droplet_name}: SSH only from {who}"
                         + (f", Swarm ports between the droplets tagged {cluster}" if cluster else ""))
        return FirewallResult("created", operator_ip, inbound)
    if state.action == "unchanged":
        return FirewallResult("unchanged", operator_ip, inbound)
    api = digitalocean.Firewall(token=spec.token, id=current["id"])
    if state.action == "update":
        ids, tags = list(current.get("droplet_ids") or []), list(current.get("tags") or [])
        body = {"name": spec.droplet_name, "inbound_rules": inbound, "outbound_rules": outbound,
                "droplet_ids": sorted(set(ids) if cluster else set(ids) | {droplet_id}),
                "tags": tags + [cluster] if cluster and cluster not in tags else tags}
        _call(spec, "updating the firewall",
              lambda: api.get_data(f"firewalls/{current['id']}", type="PUT", params=body), on_event)
        on_event("info", f"updated firewall {spec.droplet_name}: SSH only from {who}"
                         + (f", Swarm ports between the droplets tagged {cluster}" if cluster else ""))
    elif cluster:
        _call(spec, "attaching the firewall", lambda: api.add_tags([cluster]), on_event)
        on_event("info", f"attached firewall {spec.droplet_name} to the droplets tagged {cluster}")
    else:
        _call(spec, "attaching the firewall", lambda: api.add_droplets([droplet_id]), on_event)
        on_event("info", f"attached firewall {spec.droplet_name} to droplet {droplet_id}")
    return FirewallResult("updated", operator_ip, inbound)


def _ssh_sources(rules: list[dict]) -> list[str]:
    return [a for r in rules if str(r.get("ports")) == "22" for a in (r.get("sources") or {}).get("addresses") or []]
