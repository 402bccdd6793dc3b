"""The fake API's domains and records -> knot zone files (pure functions, no I/O).

DigitalOcean's own SOA record is synthesised (its `data` is only the TTL in the API); every
other record is written as the API holds it. Relative names stay relative to the zone.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

# Types whose data is a host name: a name with a dot and no trailing dot is absolute.
_HOST_DATA = {"CNAME", "NS", "MX", "SRV"}
SOA_TIMERS = "10800 3600 604800 1800"  # refresh retry expire minimum, DigitalOcean's values


def _host(data: str) -> str:
    if data == "@" or data.endswith("."):
        return data
    return data + "." if "." in data else data


def _txt(data: str) -> str:
    """TXT data as one or more quoted strings of at most 255 bytes each."""
    if data.startswith('"'):
        return data
    escaped = data.replace("\\", "\\\\").replace('"', '\\"')
    return " ".join(f'"{escaped[i:i + 255]}"' for i in range(0, max(len(escaped), 1), 255))


def record_line(rec: Mapping) -> str | None:
    """One zone-file line for an API record (None for the SOA, which is synthesised)."""
    rtype, name, data, ttl = rec["type"], rec["name"], str(rec["data"]), int(rec.get("ttl") or 1800)
    if rtype == "SOA":
        return None
    if rtype == "TXT":
        rdata = _txt(data)
    elif rtype == "MX":
        rdata = f"{rec.get('priority') or 0} {_host(data)}"
    elif rtype == "SRV":
        rdata = f"{rec.get('priority') or 0} {rec.get('weight') or 0} {rec.get('port') or 0} {_host(data)}"
    elif rtype == "CAA":
        rdata = f"{rec.get('flags') or 0} {rec.get('tag') or 'issue'} \"{data}\""
    elif rtype in _HOST_DATA:
        rdata = _host(data)
    else:
        rdata = data
    return f"{name}\t{ttl}\tIN\t{rtype}\t{rdata}"


def render_zone(domain: str, records: Sequence[Mapping], serial: int) -> str:
    """The whole zone file of one domain."""
    ns = [r for r in records if r["type"] == "NS" and r["name"] == "@"]
    primary = _host(str(ns[0]["data"])) if ns else f"ns1.{domain}."
    lines = [f"$ORIGIN {domain}.", "$TTL 1800",
             f"@\t1800\tIN\tSOA\t{primary} hostmaster.{domain}. {serial} {SOA_TIMERS}"]
    lines += [line for line in map(record_line, records) if line]
    return "\n".join(lines) + "\n"


def zones_conf(domains: Sequence[str]) -> str:
    """knot's `zone:` section naming every domain (its file is <domain>.zone in storage)."""
    if not domains:
        return "# no domains yet\n"
    return "zone:\n" + "".join(f"  - domain: {d}\n    file: {d}.zone\n" for d in sorted(domains))
