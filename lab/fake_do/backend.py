"""The seam between the fake DigitalOcean API and whatever plays the droplets.

The API keeps the state (ids, names, status, networks); a backend makes the machines
real. The API calls the backend from a worker thread, never from a request handler, so a
slow container start shows as status "new" exactly like a real droplet being built.
"""
from __future__ import annotations

from typing import Protocol


class DropletBackend(Protocol):
    vpc_range: str          # the CIDR the API hands private (VPC) addresses from

    def create(
        self,
        droplet_id: int,
        name: str,
        ssh_public_keys: list[str],
        user_data: str | None,
        tags: list[str],
        private_ip: str | None = None,
    ) -> str:
        """Start the machine (with private_ip on its VPC interface) and return its public IPv4
        once it accepts SSH."""

    def delete(self, droplet_id: int) -> None:
        """Remove the machine and everything made for it. Idempotent."""

    def apply_firewall(self, droplet_id: int, inbound_rules: list[dict],
                       tagged: dict[str, list[int]] | None = None) -> None:
        """Enforce DigitalOcean-shaped inbound_rules ({protocol, ports, sources: {addresses,
        droplet_ids, tags}}) on the machine; an empty list means no firewall attached (everything
        open). ``tagged``: the droplet ids carrying each tag the rules name (the API calls again
        whenever that changes)."""


class NullBackend:
    """No machines: addresses come from TEST-NET-1 (192.0.2.0/24), nothing listens there."""

    vpc_range = "10.110.0.0/16"

    def create(self, droplet_id: int, name: str, ssh_public_keys: list[str],
               user_data: str | None, tags: list[str], private_ip: str | None = None) -> str:
        return f"192.0.2.{(droplet_id % 250) + 2}"

    def delete(self, droplet_id: int) -> None:
        return None

    def apply_firewall(self, droplet_id: int, inbound_rules: list[dict],
                       tagged: dict[str, list[int]] | None = None) -> None:
        return None


class DnsPublisher(Protocol):
    def publish(self, zones: dict[str, list[dict]]) -> None:
        """Serve exactly these zones ({domain: API records}) from now on."""
