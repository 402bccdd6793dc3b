"""The fake API's container registry endpoints (DigitalOcean Container Registry, DOCR).

One registry per account, as `/v2/registry` has it: GET, POST (name, subscription tier, region),
DELETE, and GET /v2/registry/docker-credentials, whose Docker config names the registry server
the images live on. On DigitalOcean that is registry.digitalocean.com; the lab starts its own
registry service (lab/services/registry.py) and tells the API its address (``--registry-server``).
The credentials are the API token as user and password, base64(token:token), which DOCR takes
and the lab's registry is set up to take. The lab has one credential: ``read_write`` and
``expiry_seconds`` are checked, but read-only and expiring credentials are not told apart.

The registry is kept in the store's data (key "registry"), so the state file keeps it too.
"""
from __future__ import annotations

import base64
import re
from typing import Any, Callable

from .store import ApiError, FakeStore, not_found, now_iso, unprocessable

DOCR_SERVER = "registry.digitalocean.com"
SERVER_ENV = "FAKE_DO_REGISTRY_SERVER"
NAME = re.compile(r"^[a-z0-9-]{1,63}$")
REGIONS = ("nyc3", "sfo3", "ams3", "sgp1", "fra1")   # registry_create's enum
DEFAULT_REGION = "fra1"
# slug: (name, included repositories (0: unlimited), storage bytes, storage overage allowed,
#        bandwidth bytes, USD cents a month, overage cents per GiB): DigitalOcean's list prices
TIERS: dict[str, tuple[str, int, int, bool, int, int, int]] = {
    "starter": ("Starter", 1, 500 * 2**20, False, 500 * 2**20, 0, 0),
    "basic": ("Basic", 5, 5 * 2**30, True, 5 * 2**30, 500, 2),
    "professional": ("Professional", 0, 100 * 2**30, True, 100 * 2**30, 2000, 2),
}
Handler = Callable[..., tuple[int, Any]]
Write = Callable[[int, Any], tuple[int, Any]]


def _tier(slug: str) -> dict:
    name, repos, storage, overage, bandwidth, price, overage_price = TIERS[slug]
    return {"name": name, "slug": slug, "included_repositories": repos, "included_storage_bytes": storage,
            "allow_storage_overage": overage, "included_bandwidth_bytes": bandwidth,
            "monthly_price_in_cents": price, "storage_overage_price_in_cents": overage_price}


def _flag(query: dict, key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


class RegistryApi:
    """The /v2/registry routes over one FakeStore; ``server`` is where docker logs in."""

    def __init__(self, store: FakeStore, token: str, server: str = DOCR_SERVER) -> None:
        self.store = store
        self._token = token
        self.server = server

    def __repr__(self) -> str:  # never show the token
        return f"<RegistryApi {self.server}>"

    def routes(self, write: Write) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", r"/registry", lambda q, b: (200, {"registry": self._get()})),
            ("POST", r"/registry", lambda q, b: write(201, {"registry": self._create(b)})),
            ("DELETE", r"/registry", lambda q, b: write(204, self._delete())),
            ("GET", r"/registry/docker-credentials", lambda q, b: (200, self.docker_credentials(q))),
        ]

    # --- state (under the store's lock: it deep-copies the data for the state file) ---------
    def _get(self) -> dict:
        with self.store._lock:
            registry = self.store.data.get("registry")
            if not registry:
                raise not_found()
            return dict(registry)

    def _create(self, body: Any) -> dict:
        body = body if isinstance(body, dict) else {}
        name, tier, region = body.get("name"), body.get("subscription_tier_slug"), body.get("region")
        if not isinstance(name, str) or not NAME.match(name):
            raise unprocessable("name must be 1-63 lowercase letters, digits and dashes")
        if tier not in TIERS:
            raise unprocessable(f"subscription_tier_slug must be one of {', '.join(TIERS)}")
        if region is not None and region not in REGIONS:
            raise unprocessable(f"region must be one of {', '.join(REGIONS)}")
        now = now_iso()
        with self.store._lock:
            if self.store.data.get("registry"):
                raise ApiError(409, "conflict", "A container registry already exists for this account; "
                                                "only one is allowed.")
            self.store.data["registry"] = registry = {
                "name": name, "created_at": now, "region": region or DEFAULT_REGION,
                "storage_usage_bytes": 0, "storage_usage_bytes_updated_at": now,
                "subscription": {"tier": _tier(tier), "created_at": now, "updated_at": now}}
            return dict(registry)

    def _delete(self) -> None:
        with self.store._lock:
            if not self.store.data.get("registry"):
                raise not_found()
            self.store.data["registry"] = None

    def docker_credentials(self, query: dict) -> dict:
        """A Docker config.json for the registry server (a registry must exist, as on DOCR)."""
        expiry, read_write = _flag(query, "expiry_seconds"), _flag(query, "read_write")
        if expiry is not None and not (expiry.isdigit()):
            raise ApiError(400, "bad_request", "expiry_seconds must be a whole number of seconds, 0 or more")
        if read_write is not None and read_write not in ("true", "false"):
            raise ApiError(400, "bad_request", "read_write must be true or false")
        self._get()
        auth = base64.b64encode(f"{self._token}:{self._token}".encode()).decode()
        return {"auths": {self.server: {"auth": auth}}}
