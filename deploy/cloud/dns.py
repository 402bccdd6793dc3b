"""DNS: A records for the domain and its subdomains in the account's longest managed zone."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import digitalocean

from deploy.cloud.api import CloudError, CloudSpec, OnEvent, _call, _manager

DNS_TTL = 300
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class DnsResult:
    status: str                 # managed | unmanaged | skipped
    records_changed: list[dict]  # {"name", "action": created|updated, "from", "to"}
    warning: str | None


def dns_hosts(domain: str, subdomains: tuple[str, ...]) -> list[str]:
    host = domain.strip().lower().rstrip(".")
    out = [host]
    for sub in subdomains:
        label = sub.strip().lower()
        if not _LABEL.match(label):
            raise CloudError(f"subdomain {sub!r} is not a valid DNS label",
                             "set SUBDOMAINS to labels like flower,admin (letters, digits, '-')")
        out.append(f"{label}.{host}")
    return out


def managed_zone(host: str, zones: list[str]) -> str | None:
    """The longest managed zone that `host` lies in (host itself or a parent)."""
    candidates = [z.lower().rstrip(".") for z in zones]
    inside = [z for z in candidates if host == z or host.endswith("." + z)]
    return max(inside, key=len) if inside else None


def _read_dns(spec: CloudSpec, hosts: list[str], on_event: OnEvent) -> tuple[str | None, Any, list]:
    """(zone, its Domain, its records) for the longest managed zone holding the hosts; (None,
    None, []) when the domain is not managed in this account. Reads only."""
    zones = [d.name for d in _call(spec, "listing DNS domains", _manager(spec).get_all_domains, on_event)]
    zone = managed_zone(hosts[0], zones)
    if zone is None:
        return None, None, []
    domain = digitalocean.Domain(token=spec.token, name=zone)
    return zone, domain, _call(spec, f"listing DNS records of {zone}", domain.get_records, on_event)


def _dns_work(hosts: list[str], zone: str, records: list, ip: str | None) -> list[tuple[str, str, Any]]:
    """(host, name in the zone, the A record to repoint or None to create one) for every host not
    pointing at ``ip`` (None: a droplet still to be made, which no record points at)."""
    work = []
    for host in hosts:
        rel = "@" if host == zone else host[: -(len(zone) + 1)]
        a_records = [r for r in records if r.type == "A" and r.name == rel]
        if not a_records:
            work.append((host, rel, None))
        work += [(host, rel, rec) for rec in a_records if rec.data != ip]
    return work


def _unmanaged(hosts: list[str], ip: str) -> str:
    return (f"DNS for {hosts[0]} is not managed in this DigitalOcean account; point A "
            f"records for {', '.join(hosts)} at {ip} at your DNS provider")


def _ensure_dns(spec: CloudSpec, ip: str, on_event: OnEvent) -> DnsResult:
    hosts = dns_hosts(spec.domain or "", spec.subdomains)
    zone, domain, records = _read_dns(spec, hosts, on_event)
    if zone is None:
        warning = _unmanaged(hosts, ip)
        on_event("warning", warning)
        return DnsResult("unmanaged", [], warning)
    changed: list[dict] = []
    for host, rel, rec in _dns_work(hosts, zone, records, ip):
        if rec is None:
            def created(rel: str = rel) -> Any | None:  # after a lost answer: is it there already?
                current = _call(spec, f"listing DNS records of {zone}", domain.get_records, on_event)
                return next((r for r in current if (r.type, r.name, r.data) == ("A", rel, ip)), None)
            _call(spec, f"creating the A record {host}",
                  lambda rel=rel: domain.create_new_domain_record(type="A", name=rel, data=ip,
                                                                  ttl=DNS_TTL), on_event,
                  before_retry=created)
            changed.append({"name": host, "action": "created", "from": None, "to": ip})
        else:
            old, rec.data = rec.data, ip
            _call(spec, f"updating the A record {host}", rec.save, on_event)
            changed.append({"name": host, "action": "updated", "from": old, "to": ip})
    for change in changed:
        on_event("info", f"DNS {change['name']} A -> {ip} ({change['action']})")
    return DnsResult("managed", changed, None)


def _plan_dns(spec: CloudSpec, ip: str | None, on_event: OnEvent) -> DnsResult:
    hosts = dns_hosts(spec.domain or "", spec.subdomains)
    zone, _, records = _read_dns(spec, hosts, on_event)
    if zone is None:
        return DnsResult("unmanaged", [], _unmanaged(hosts, ip or "the new droplet's IP"))
    return DnsResult("managed", [{"name": host, "action": "update" if rec else "create",
                                  "from": rec.data if rec else None, "to": ip}
                                 for host, _, rec in _dns_work(hosts, zone, records, ip)], None)
