"""Does the domain resolve to the droplet? Missing or elsewhere is a highlighted warning only:
every other check is pinned to the IP and runs regardless (the edge case of unmanaged DNS).

With DNS_RESOLVER set (DigitalOcean's authoritative servers by default) the name servers are
asked directly with dnspython, so a wrong record shows before any cache expires; without it
(`system`), this machine's resolver is asked."""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import dns.exception
import dns.nameserver
import dns.resolver

from deploy.checks.context import Context
from deploy.checks.model import CheckResult
from deploy.resolvers import NameServer


class Unresolved(Exception):
    """The name has no address; str() is the reason, for the message and dns.txt."""


def resolve(name: str) -> list[str]:
    """Addresses the operator's resolver gives for name, deduplicated, in answer order."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise Unresolved(exc.strerror) from None
    return list(dict.fromkeys(str(ipaddress.ip_address(info[4][0])) for info in infos))


def _addresses_of(server: NameServer) -> list[str]:
    try:
        return [str(ipaddress.ip_address(server.host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise Unresolved(f"name server {server.host} itself does not resolve ({exc.strerror})") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def ask(name: str, rdtype: str, servers: Sequence[NameServer], timeout: float) -> list[str]:
    """Addresses the given name servers answer for name (rdtype A or AAAA)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, s.port) for s in servers for ip in _addresses_of(s)]
    resolver.lifetime = timeout
    shown = ", ".join(map(str, servers))
    try:
        answer = resolver.resolve(name, rdtype, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        raise Unresolved(f"NXDOMAIN from {shown}") from None
    except dns.resolver.NoNameservers:
        raise Unresolved(f"no usable answer from {shown} (SERVFAIL or REFUSED: is the domain's zone there?)") from None
    except dns.exception.Timeout:
        raise Unresolved(f"no answer from {shown} within {timeout:g}s") from None
    if answer.rrset is None:
        raise Unresolved(f"no {rdtype} record at {shown}")
    return list(dict.fromkeys(str(ipaddress.ip_address(r.address)) for r in answer.rrset))


def check_dns(ctx: Context) -> CheckResult:
    domain, ip = ctx.target.domain, str(ipaddress.ip_address(ctx.target.ip))
    servers = ctx.config.dns_resolvers
    via = f" (asked {', '.join(map(str, servers))})" if servers else ""
    expected = f"{domain} resolves to {ip}{via}"
    try:
        rdtype = "A" if ipaddress.ip_address(ip).version == 4 else "AAAA"
        addresses = ask(domain, rdtype, servers, ctx.config.timeout) if servers else resolve(domain)
    except Unresolved as exc:
        ctx.files["http/dns.txt"] = f"{domain}: does not resolve ({exc}){via}\nexpected: {ip}\n"
        return CheckResult("dns", "warn", {"addresses": [], "error": str(exc)}, expected,
                           f"DNS WARNING: {domain} does not resolve ({exc}); create an A record "
                           f"for {domain} pointing at {ip} (or wait for propagation). The other checks "
                           "ran against the IP directly.")
    ctx.files["http/dns.txt"] = f"{domain}: {', '.join(addresses)}{via}\nexpected: {ip}\n"
    if ip in addresses:
        return CheckResult("dns", "pass", {"addresses": addresses}, expected, f"{domain} resolves to {ip}{via}")
    return CheckResult("dns", "warn", {"addresses": addresses}, expected,
                       f"DNS WARNING: {domain} resolves to {', '.join(addresses)}{via}, not the droplet {ip}; "
                       f"point its A record at {ip}. The other checks ran against the IP directly.")
