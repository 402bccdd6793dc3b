"""DNS_RESOLVER: which name servers the DNS check asks, parsed once with a clear error."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from core.errors import ConfigError

SYSTEM = "system"
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$")
_FIX = ("set DNS_RESOLVER to name servers separated by commas, e.g. ns1.digitalocean.com,ns2.digitalocean.com "
        "or 10.77.0.254 or 192.0.2.53:5353 or [2001:db8::53]:53, or to `system` for this machine's resolver")


@dataclass(frozen=True)
class NameServer:
    host: str          # an IP address or a host name
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 53 else f"{host}:{self.port}"


def _one(entry: str) -> NameServer:
    text = entry.strip().lower()
    if "/" in text or "@" in text:
        raise ConfigError("DNS_RESOLVER", f"entry {entry!r} is neither an IP address nor a host name", _FIX)
    host, port = text, "53"
    if text.startswith("["):                       # [v6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("53" if not rest else "x")
    elif text.count(":") == 1:                     # v4 or name with :port
        host, port = text.split(":")
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError("DNS_RESOLVER", f"entry {entry!r} has no valid port", _FIX) from None
    try:
        return NameServer(str(ipaddress.ip_address(host)), number)
    except ValueError:
        if _HOST.match(host) and not host.replace(".", "").isdigit():
            return NameServer(host.rstrip("."), number)
    raise ConfigError("DNS_RESOLVER", f"entry {entry!r} is neither an IP address nor a host name", _FIX)


def parse(entries: Iterable[str]) -> tuple[NameServer, ...]:
    """() means the system resolver (`system` or nothing given)."""
    items = [e for e in entries if e.strip()]
    if not items or [e.strip().lower() for e in items] == [SYSTEM]:
        return ()
    if any(e.strip().lower() == SYSTEM for e in items):
        raise ConfigError("DNS_RESOLVER", "mixes `system` with name servers", _FIX)
    return tuple(_one(e) for e in items)
