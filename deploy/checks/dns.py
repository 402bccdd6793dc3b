"""Does the domain resolve to the droplet? Missing or elsewhere is a highlighted warning only:
every other check is pinned to the IP and runs regardless (the edge case of unmanaged DNS)."""
from __future__ import annotations

import ipaddress
import socket

from deploy.checks.context import Context
from deploy.checks.model import CheckResult


def resolve(name: str) -> list[str]:
    """Addresses the operator's resolver gives for name, deduplicated, in answer order."""
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(ipaddress.ip_address(info[4][0])) for info in infos))


def check_dns(ctx: Context) -> CheckResult:
    domain, ip = ctx.target.domain, str(ipaddress.ip_address(ctx.target.ip))
    expected = f"{domain} resolves to {ip}"
    try:
        addresses = resolve(domain)
    except socket.gaierror as exc:
        ctx.files["http/dns.txt"] = f"{domain}: does not resolve ({exc.strerror})\nexpected: {ip}\n"
        return CheckResult("dns", "warn", {"addresses": [], "error": exc.strerror}, expected,
                           f"DNS WARNING: {domain} does not resolve ({exc.strerror}); create an A record "
                           f"for {domain} pointing at {ip} (or wait for propagation). The other checks "
                           "ran against the IP directly.")
    ctx.files["http/dns.txt"] = f"{domain}: {', '.join(addresses)}\nexpected: {ip}\n"
    if ip in addresses:
        return CheckResult("dns", "pass", {"addresses": addresses}, expected, f"{domain} resolves to {ip}")
    return CheckResult("dns", "warn", {"addresses": addresses}, expected,
                       f"DNS WARNING: {domain} resolves to {', '.join(addresses)}, not the droplet {ip}; "
                       f"point its A record at {ip}. The other checks ran against the IP directly.")
