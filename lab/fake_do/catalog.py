"""The sizes and regions the fake API offers, shaped as DigitalOcean's size and region objects.

Memory (MiB), vCPUs, disk (GB) and transfer (TB) are DigitalOcean's Basic (Regular Intel)
plans for each slug, at list prices; every size is offered in every region here. A slug
missing from these tables is refused when a droplet is created, as the real API does.
"""
from __future__ import annotations

import copy

# slug: (memory MiB, vcpus, disk GB, transfer TB, USD per month, USD per hour)
_SIZES: dict[str, tuple[int, int, int, float, float, float]] = {
    "s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0, 0.00595),
    "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0, 0.00893),
    "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0, 0.01786),
    "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0, 0.02679),
    "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0, 0.03571),
    "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0, 0.07143),
    "s-8vcpu-16gb": (16384, 8, 320, 6.0, 96.0, 0.14286),
}

_REGIONS: dict[str, str] = {
    "ams3": "Amsterdam 3", "atl1": "Atlanta 1", "blr1": "Bangalore 1", "fra1": "Frankfurt 1",
    "lon1": "London 1", "nyc1": "New York 1", "nyc3": "New York 3", "sfo2": "San Francisco 2",
    "sfo3": "San Francisco 3", "sgp1": "Singapore 1", "syd1": "Sydney 1", "tor1": "Toronto 1",
}
_REGION_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]


def size(slug: str) -> dict | None:
    """The size object for `slug`, or None when the fake does not offer it."""
    if slug not in _SIZES:
        return None
    memory, vcpus, disk, transfer, monthly, hourly = _SIZES[slug]
    return {"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": transfer,
            "price_monthly": monthly, "price_hourly": hourly, "regions": sorted(_REGIONS),
            "available": True, "description": "Basic",
            "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}]}


def region(slug: str) -> dict | None:
    """The region object for `slug`, or None when the fake does not offer it."""
    if slug not in _REGIONS:
        return None
    return {"slug": slug, "name": _REGIONS[slug], "features": copy.copy(_REGION_FEATURES),
            "available": True, "sizes": list(_SIZES)}
