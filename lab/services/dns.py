"""The lab's DNS server: knotd in a container, serving the fake API's domains.

The fake API calls ZonePublisher.publish after every domain or record change: it rewrites the
zone files and zones.conf in the folder mounted at /zones and runs `knotc reload`, so a real
authoritative server answers with exactly what the API holds.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from lab.config import LabConfig, load
from lab.docker import docker
from lab.errors import LabError
from lab.images.recipes import DNS_TAG
from lab.services.containers import container_name, ensure_container, wait_until
from lab.services.zone import render_zone, zones_conf

Log = Callable[[str], None]
ROLE = "dns"
CONF = "/etc/knot/lab.conf"


def zones_dir(cfg: LabConfig) -> Path:
    return cfg.state_dir.resolve() / "dns"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)   # knotd reads it inside the container
    os.replace(tmp, path)


class ZonePublisher:
    """Writes the zones and tells knotd to reload them. One publish at a time."""

    def __init__(self, directory: Path, container: str | None, server_ip: str | None = None,
                 log: Log = print) -> None:
        self.directory, self.container, self.server_ip, self.log = directory, container, server_ip, log
        self._lock = threading.Lock()
        self._serial = 0

    def publish(self, zones: Mapping[str, Sequence[Mapping]]) -> None:
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Serials only grow, even for two publishes within one second.
            self._serial = max(self._serial + 1, int(time.time()))
            for domain, records in zones.items():
                _write(self.directory / f"{domain}.zone", render_zone(domain, records, self._serial))
            for stale in self.directory.glob("*.zone"):
                if stale.name[:-len(".zone")] not in zones:
                    stale.unlink()
            _write(self.directory / "zones.conf", zones_conf(list(zones)))
            if self.container:
                docker("exec", self.container, "knotc", "-c", CONF, "reload", timeout=60)
            if self.server_ip:
                self._wait_loaded(list(zones))

    def _wait_loaded(self, domains: list[str], timeout: float = 15.0) -> None:
        """knotc reload returns before zones are loaded: wait for the new serial, so a record
        written through the API is served by the time the API answers."""
        deadline = time.monotonic() + timeout
        pending = list(domains)
        while pending:
            pending = [d for d in pending if soa_serial(self.server_ip, d) != self._serial]
            if pending and time.monotonic() > deadline:
                raise LabError(f"the lab DNS server did not load serial {self._serial} of "
                               f"{', '.join(pending)} in {timeout:.0f}s (see `docker logs {self.container}`)")
            if pending:
                time.sleep(0.05)


def publisher_from_env() -> ZonePublisher:
    """For `python -m lab.fake_do --dns-factory lab.services.dns:publisher_from_env`."""
    cfg = load()
    return ZonePublisher(zones_dir(cfg), container_name(cfg, ROLE), cfg.dns_ip,
                         log=lambda msg: print(msg, file=sys.stderr, flush=True))


def soa_serial(ip: str, domain: str, port: int = 53) -> int | None:
    """The SOA serial the server gives for domain, or None (not loaded, no answer)."""
    try:
        reply = dns.query.udp(dns.message.make_query(domain + ".", "SOA"), ip, timeout=1, port=port)
    except (OSError, dns.exception.DNSException):
        return None
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def answers(ip: str, port: int = 53) -> bool:
    """True once the server answers a query (any rcode) over UDP."""
    try:
        dns.query.udp(dns.message.make_query("lab.invalid.", "SOA"), ip, timeout=1, port=port)
        return True
    except (OSError, dns.exception.DNSException):
        return False


def ensure(cfg: LabConfig, log: Log = print) -> str:
    """knotd running at cfg.dns_ip with the zones folder mounted; returns its address."""
    directory = zones_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "zones.conf").exists():
        # The zone files are the API's last publish: a lost zones.conf (knotd does not start
        # without it) is made again from them, so a restarted knotd serves what the API holds.
        _write(directory / "zones.conf", zones_conf([p.name[:-len(".zone")] for p in directory.glob("*.zone")]))
    name = ensure_container(cfg, ROLE, DNS_TAG, cfg.dns_ip, ["-v", f"{directory}:/zones:ro"], log=log)
    wait_until(lambda: answers(cfg.dns_ip), name, "DNS server")
    return cfg.dns_ip


__all__ = ["ZonePublisher", "ensure", "publisher_from_env", "answers", "zones_dir"]
