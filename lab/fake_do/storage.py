"""The fake API's block storage volumes and snapshots: what `inv destroy` must recognise as data.

Listed and deleted as DigitalOcean does (GET /v2/volumes, DELETE /v2/volumes/{id}, GET
/v2/snapshots with resource_type, DELETE /v2/snapshots/{id}); made through the store
(``create_volume``, ``create_snapshot``) by tests and lab setups: the deployer never makes either.
A volume attached to a droplet that is deleted is detached with it (its ``droplet_ids`` name
only droplets that exist), and deleting an attached volume is refused, as on DigitalOcean.

Kept in the store's data (keys "volumes" and "snapshots"), so the state file keeps them too.
"""
from __future__ import annotations

import copy
import uuid
from typing import Any, Callable

from . import catalog
from .store import ApiError, FakeStore, not_found, now_iso, unprocessable

Handler = Callable[..., tuple[int, Any]]
Write = Callable[[int, Any], tuple[int, Any]]
Page = Callable[[dict, str, list], tuple[int, Any]]
RESOURCE_TYPES = ("droplet", "volume")


def _one(query: dict, key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


class StorageApi:
    """The /v2/volumes and /v2/snapshots routes over one FakeStore."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        with store._lock:
            store.data.setdefault("volumes", {})     # a state file written before the fake knew them
            store.data.setdefault("snapshots", {})

    def routes(self, write: Write, page: Page) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", r"/volumes", lambda q, b: page(q, "volumes", self.list_volumes(_one(q, "name"),
                                                                                _one(q, "region")))),
            ("GET", r"/volumes/([\w-]+)", lambda q, b, v: (200, {"volume": self.volume(v)})),
            ("DELETE", r"/volumes/([\w-]+)", lambda q, b, v: write(204, self.delete_volume(v))),
            ("GET", r"/snapshots", lambda q, b: page(q, "snapshots", self.list_snapshots(_one(q, "resource_type")))),
            ("GET", r"/snapshots/([\w-]+)", lambda q, b, s: (200, {"snapshot": self.snapshot(s)})),
            ("DELETE", r"/snapshots/([\w-]+)", lambda q, b, s: write(204, self.delete_snapshot(s))),
        ]

    # --- volumes ---------------------------------------------------------------------------
    def _shown(self, volume: dict) -> dict:
        """As the API shows it: attached only to droplets that still exist."""
        shown = copy.deepcopy(volume)
        shown["droplet_ids"] = [i for i in volume["droplet_ids"] if str(i) in self.store.data["droplets"]]
        return shown

    def create_volume(self, body: dict) -> dict:
        """A volume (name, size_gigabytes, region; optional tags, droplet_ids to attach it to)."""
        region = catalog.region(str(body.get("region") or ""))
        if region is None or not body.get("name") or not isinstance(body.get("size_gigabytes"), int):
            raise unprocessable("name, size_gigabytes and a region are required")
        with self.store._lock:
            for droplet_id in body.get("droplet_ids") or []:
                self.store.droplet(int(droplet_id))
            volume = {"id": str(uuid.uuid4()), "region": region, "droplet_ids": [int(i) for i in body.get("droplet_ids") or []],
                      "name": body["name"], "description": body.get("description") or "",
                      "size_gigabytes": body["size_gigabytes"], "created_at": now_iso(),
                      "filesystem_type": body.get("filesystem_type") or "ext4",
                      "filesystem_label": body.get("filesystem_label") or "", "tags": list(body.get("tags") or [])}
            self.store.ensure_tags(volume["tags"])
            self.store.data["volumes"][volume["id"]] = volume
            for droplet_id in volume["droplet_ids"]:
                self.store.droplet(droplet_id)["volume_ids"].append(volume["id"])
            return self._shown(volume)

    def list_volumes(self, name: str | None = None, region: str | None = None) -> list[dict]:
        with self.store._lock:
            return [self._shown(v) for v in self.store.data["volumes"].values()
                    if (name is None or v["name"] == name) and (region is None or v["region"]["slug"] == region)]

    def volume(self, volume_id: str) -> dict:
        with self.store._lock:
            volume = self.store.data["volumes"].get(volume_id)
            if volume is None:
                raise not_found()
            return self._shown(volume)

    def delete_volume(self, volume_id: str) -> None:
        with self.store._lock:
            if self.volume(volume_id)["droplet_ids"]:
                raise ApiError(409, "conflict", "The volume is attached to a Droplet; detach it before deleting it.")
            del self.store.data["volumes"][volume_id]

    # --- snapshots -------------------------------------------------------------------------
    def create_snapshot(self, body: dict) -> dict:
        """A snapshot of a droplet or volume (resource_type, resource_id, name; optional tags).
        The resource need not exist any more: a snapshot outlives what it was taken of."""
        if body.get("resource_type") not in RESOURCE_TYPES or not body.get("resource_id") or not body.get("name"):
            raise unprocessable("resource_type (droplet or volume), resource_id and name are required")
        with self.store._lock:
            snapshot_id = str(self.store._new_id())
            snapshot = {"id": snapshot_id, "name": body["name"], "created_at": now_iso(),
                        "regions": list(body.get("regions") or ["fra1"]), "resource_id": str(body["resource_id"]),
                        "resource_type": body["resource_type"], "min_disk_size": int(body.get("min_disk_size") or 25),
                        "size_gigabytes": float(body.get("size_gigabytes") or 1.5), "tags": list(body.get("tags") or [])}
            self.store.ensure_tags(snapshot["tags"])
            self.store.data["snapshots"][snapshot_id] = snapshot
            return copy.deepcopy(snapshot)

    def list_snapshots(self, resource_type: str | None = None) -> list[dict]:
        with self.store._lock:
            return [copy.deepcopy(s) for s in self.store.data["snapshots"].values()
                    if resource_type is None or s["resource_type"] == resource_type]

    def snapshot(self, snapshot_id: str) -> dict:
        with self.store._lock:
            snapshot = self.store.data["snapshots"].get(snapshot_id)
            if snapshot is None:
                raise not_found()
            return copy.deepcopy(snapshot)

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self.store._lock:
            self.snapshot(snapshot_id)
            del self.store.data["snapshots"][snapshot_id]
