"""The fake API's state: plain JSON-able dicts shaped like DigitalOcean's responses.

Only data rules live here (ids, validation, shapes); HTTP, threads and the backend are
the server's business. Every public method takes the lock, so the store is safe to call
from concurrent request handlers and from the droplet-creation worker threads.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import re
import threading
import time
import uuid
from typing import Any

from . import catalog

RECORD_TYPES = {"A", "AAAA", "CNAME", "TXT", "MX", "NS", "SRV", "CAA", "SOA"}
FIREWALL_PROTOCOLS = {"tcp", "udp", "icmp"}
HOSTNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]{0,252}$")
# Public IPv6 addresses come from the documentation prefix, as IPv4 ones from TEST-NET.
IPV6_NET = ipaddress.IPv6Network("2001:db8:0:1::/64")
TARGET_KINDS = ("addresses", "droplet_ids", "load_balancer_uids", "kubernetes_ids", "tags")


class ApiError(Exception):
    """An error the API answers with: HTTP status + DigitalOcean's {id, message} body."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message


def not_found() -> ApiError:
    return ApiError(404, "not_found", "The resource you were accessing could not be found.")


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "unprocessable_entity", message)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def ssh_fingerprint(public_key: str) -> str:
    """DigitalOcean's fingerprint: MD5 of the key blob, colon-separated hex."""
    parts = public_key.split()
    if len(parts) < 2:
        raise unprocessable("Key invalid, key should be of the form 'type key [comment]'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise unprocessable("Key invalid, the key data is not valid base64") from None
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 - DO's fingerprint format, not security
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def _clean_targets(targets: Any, field: str) -> dict:
    """Keep only the non-empty target lists, as the real API echoes them."""
    if not isinstance(targets, dict):
        raise unprocessable(f"{field} must be an object")
    out = {}
    for key in TARGET_KINDS:
        value = targets.get(key) or []
        if not isinstance(value, list):
            raise unprocessable(f"{field}.{key} must be a list")
        if key == "addresses":
            for addr in value:
                try:
                    ipaddress.ip_network(addr, strict=False)
                except ValueError:
                    raise unprocessable(f"{field}.addresses: {addr!r} is not an IP or CIDR") from None
        if value:
            out[key] = list(value)
    return out


def _clean_rules(rules: Any, direction: str) -> list[dict]:
    field = "sources" if direction == "inbound" else "destinations"
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise unprocessable(f"{direction}_rules must be a list")
    out = []
    for rule in rules:
        if not isinstance(rule, dict) or rule.get("protocol") not in FIREWALL_PROTOCOLS:
            raise unprocessable(f"{direction}_rules: protocol must be one of tcp, udp, icmp")
        ports = str(rule.get("ports") or ("0" if rule["protocol"] == "icmp" else ""))
        if not ports:
            raise unprocessable(f"{direction}_rules: ports is required for {rule['protocol']}")
        out.append({"protocol": rule["protocol"], "ports": ports,
                    field: _clean_targets(rule.get(field, {}), f"{direction}_rules.{field}")})
    return out


class FakeStore:
    """All resources of one fake account."""

    def __init__(self, data: dict | None = None, vpc_range: str = "10.110.0.0/16") -> None:
        self._lock = threading.RLock()
        self.vpc_range = ipaddress.IPv4Network(vpc_range)
        self.data: dict = data or {
            "next_id": 1000, "droplets": {}, "actions": {}, "ssh_keys": {},
            "firewalls": {}, "domains": {}, "records": {}, "tags": [], "vpcs": {},
        }
        self.data.setdefault("vpcs", {})  # a state file written before the fake knew VPCs

    # --- persistence ---------------------------------------------------------------
    def snapshot(self) -> dict:
        with self._lock:
            return copy.deepcopy(self.data)

    def _new_id(self) -> int:
        self.data["next_id"] += 1
        return self.data["next_id"]

    # --- account -------------------------------------------------------------------
    def account(self) -> dict:
        with self._lock:
            used = len(self.data["droplets"])
        return {"account": {
            "droplet_limit": 25, "floating_ip_limit": 3, "volume_limit": 100,
            "email": "operator@example.test", "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
            "email_verified": True, "status": "active", "status_message": "",
            "team": {"uuid": "5df3e3004a17e242b7c20ca6c9fc25b701a47ece", "name": "Lab"},
            "droplets_in_use": used}}

    # --- tags ----------------------------------------------------------------------
    def ensure_tags(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                if not isinstance(name, str) or not name:
                    raise unprocessable("tag names must be non-empty strings")
                if name not in self.data["tags"]:
                    self.data["tags"].append(name)

    def tag(self, name: str) -> dict:
        with self._lock:
            if name not in self.data["tags"]:
                raise not_found()
            count = sum(1 for d in self.data["droplets"].values() if name in d["tags"])
            return {"name": name, "resources": {"count": count, "droplets": {"count": count}}}

    def list_tags(self) -> list[dict]:
        with self._lock:
            return [self.tag(n) for n in self.data["tags"]]

    def delete_tag(self, name: str) -> None:
        with self._lock:
            if name not in self.data["tags"]:
                raise not_found()
            self.data["tags"].remove(name)
            # every resource loses the tag (volumes and snapshots: lab/fake_do/storage.py)
            tagged = [*self.data["droplets"].values(), *(self.data.get("volumes") or {}).values(),
                      *(self.data.get("snapshots") or {}).values()]
            for resource in tagged:
                if name in resource["tags"]:
                    resource["tags"].remove(name)

    def tag_resources(self, name: str, resources: list[dict], add: bool) -> list[int]:
        """Tag/untag droplets; returns the droplet ids touched."""
        with self._lock:
            if name not in self.data["tags"]:
                raise not_found()
            touched = []
            for res in resources or []:
                if res.get("resource_type") != "droplet":
                    continue
                droplet = self.droplet(int(res.get("resource_id", 0)))
                if add and name not in droplet["tags"]:
                    droplet["tags"].append(name)
                if not add and name in droplet["tags"]:
                    droplet["tags"].remove(name)
                touched.append(droplet["id"])
            return touched

    def tagged(self, names: set[str] | list[str]) -> dict[str, list[int]]:
        """The droplets carrying each tag in ``names`` (ids, in creation order)."""
        with self._lock:
            return {name: [d["id"] for d in self.data["droplets"].values() if name in d["tags"]]
                    for name in names}

    def _require_tags(self, names: list[str], where: str) -> None:
        """The contract's existing_tags_array: "Tag names must exist in order to be referenced"."""
        missing = [n for n in names if n not in self.data["tags"]]
        if missing:
            raise unprocessable(f"{where}: tag {missing[0]!r} does not exist; create it first (POST /v2/tags)")

    # --- VPCs ----------------------------------------------------------------------
    def _default_vpc(self, region: str) -> dict:
        """The region's default VPC, made on first use (as DigitalOcean does for an account's
        first resource in a region)."""
        for vpc in self.data["vpcs"].values():
            if vpc["region"] == region and vpc["default"]:
                return vpc
        return self._new_vpc(region, f"default-{region}", str(self.vpc_range), default=True)

    def _new_vpc(self, region: str, name: str, ip_range: str, default: bool) -> dict:
        vpc_id = str(uuid.uuid4())
        vpc = {"id": vpc_id, "urn": f"do:vpc:{vpc_id}", "name": name, "description": "",
               "region": region, "ip_range": ip_range, "default": default, "created_at": now_iso()}
        self.data["vpcs"][vpc_id] = vpc
        return vpc

    def create_vpc(self, region: str, name: str, ip_range: str) -> dict:
        """A VPC of one's own (not the region's default): for tests and lab setups."""
        with self._lock:
            return copy.deepcopy(self._new_vpc(region, name, ip_range, default=False))

    def _droplet_vpc(self, requested: Any, region: str) -> str:
        """The VPC a new droplet joins: the one named (it must exist, in the droplet's region),
        else the region's default."""
        if requested in (None, ""):
            return self._default_vpc(region)["id"]
        vpc = self.data["vpcs"].get(str(requested))
        if vpc is None:
            raise unprocessable(f"vpc_uuid: there is no VPC {requested}")
        if vpc["region"] != region:
            raise unprocessable(f"vpc_uuid: VPC {requested} is in region {vpc['region']}, not {region}")
        return vpc["id"]

    def vpc(self, vpc_id: str) -> dict:
        with self._lock:
            vpc = self.data["vpcs"].get(vpc_id)
            if vpc is None:
                raise not_found()
            return copy.deepcopy(vpc)

    def list_vpcs(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(list(self.data["vpcs"].values()))

    # --- ssh keys ------------------------------------------------------------------
    def create_key(self, body: dict) -> dict:
        name, public_key = body.get("name"), body.get("public_key")
        if not name or not public_key:
            raise unprocessable("name and public_key are required")
        fingerprint = ssh_fingerprint(public_key)
        with self._lock:
            if any(k["fingerprint"] == fingerprint for k in self.data["ssh_keys"].values()):
                raise unprocessable("SSH Key is already in use on your account")
            key = {"id": self._new_id(), "name": name, "public_key": public_key.strip(),
                   "fingerprint": fingerprint}
            self.data["ssh_keys"][str(key["id"])] = key
            return copy.deepcopy(key)

    def key(self, ident: str) -> dict:
        with self._lock:
            for key in self.data["ssh_keys"].values():
                if str(key["id"]) == ident or key["fingerprint"] == ident:
                    return key
        raise not_found()

    def list_keys(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(list(self.data["ssh_keys"].values()))

    def update_key(self, ident: str, body: dict) -> dict:
        with self._lock:
            key = self.key(ident)
            if body.get("name"):
                key["name"] = body["name"]
            return copy.deepcopy(key)

    def delete_key(self, ident: str) -> None:
        with self._lock:
            key = self.key(ident)
            del self.data["ssh_keys"][str(key["id"])]

    # --- droplets & actions ----------------------------------------------------------
    def create_droplet(self, body: dict) -> tuple[dict, dict, list[str]]:
        """Returns (droplet, action, resolved public keys)."""
        for field in ("name", "region", "size", "image"):
            if not body.get(field):
                raise unprocessable(f"{field} is required")
        if not HOSTNAME.match(str(body["name"])):
            raise unprocessable("Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)")
        tags = body.get("tags") or []
        if not isinstance(tags, list):
            raise unprocessable("tags must be a list")
        size, region = catalog.size(str(body["size"])), catalog.region(str(body["region"]))
        if size is None:
            raise unprocessable("You specified an invalid size for Droplet creation.")
        if region is None:
            raise unprocessable("You specified an invalid region for Droplet creation.")
        features = ["private_networking"] + [f for f in ("ipv6", "monitoring") if body.get(f)]
        with self._lock:
            public_keys = [self.key(str(k))["public_key"] for k in body.get("ssh_keys") or []]
            vpc_uuid = self._droplet_vpc(body.get("vpc_uuid"), region["slug"])
            self.ensure_tags(tags)
            droplet_id = self._new_id()
            private_ip = self._free_private_ip()
            droplet = {
                "id": droplet_id, "name": body["name"], "memory": size["memory"],
                "vcpus": size["vcpus"], "disk": size["disk"], "disk_info": size["disk_info"],
                "locked": False, "status": "new", "kernel": None, "created_at": now_iso(),
                "features": features, "backup_ids": [], "next_backup_window": None,
                "snapshot_ids": [],
                "image": {"id": 1, "slug": body["image"], "name": str(body["image"]),
                          "distribution": "Ubuntu", "public": True},
                "volume_ids": [], "size": size, "size_slug": size["slug"],
                "networks": {"v4": [{"ip_address": private_ip, "netmask": str(self.vpc_range.netmask),
                                      "gateway": str(self.vpc_range[1]), "type": "private"}], "v6": []},
                "region": region, "tags": list(tags),
                "vpc_uuid": vpc_uuid,
                # "_" fields are the fake's own bookkeeping, never shown by the API
                "_user_data": body.get("user_data"), "_public_keys": public_keys,
            }
            self.data["droplets"][str(droplet_id)] = droplet
            action = self._new_action("create", droplet_id)
            return copy.deepcopy(droplet), copy.deepcopy(action), public_keys

    def _free_private_ip(self) -> str:
        """The VPC's lowest address no droplet holds (the first is the gateway): addresses are
        unique while droplets live, and a machine made for the address can really take it."""
        taken = {n["ip_address"] for d in self.data["droplets"].values()
                 for n in d["networks"]["v4"] if n["type"] == "private"}
        hosts = self.vpc_range.hosts()
        next(hosts, None)                                   # the gateway
        for address in hosts:                               # lazily: a /16 has 65,534
            if str(address) not in taken:
                return str(address)
        raise unprocessable(f"no free address left in the VPC {self.vpc_range}")

    def _new_action(self, kind: str, droplet_id: int) -> dict:
        action = {"id": self._new_id(), "status": "in-progress", "type": kind,
                  "started_at": now_iso(), "completed_at": None, "resource_id": droplet_id,
                  "resource_type": "droplet", "region_slug": None}
        self.data["actions"][str(action["id"])] = action
        return action

    def finish_create(self, droplet_id: int, action_id: int, public_ip: str | None,
                      error: str | None = None) -> bool:
        """Mark the build done; False when the droplet was deleted meanwhile."""
        with self._lock:
            action = self.data["actions"].get(str(action_id))
            if action:
                action["status"] = "errored" if error else "completed"
                action["completed_at"] = now_iso()
            droplet = self.data["droplets"].get(str(droplet_id))
            if droplet is None:
                return False
            if error:
                droplet["_build_error"] = error
                return True
            droplet["status"] = "active"
            if not public_ip:  # a backend may build a private-only machine
                return True
            droplet["networks"]["v4"].append({"ip_address": public_ip, "netmask": "255.255.255.0",
                                              "gateway": public_ip.rsplit(".", 1)[0] + ".1",
                                              "type": "public"})
            if "ipv6" in droplet["features"]:  # DigitalOcean lists it with the public IPv4
                droplet["networks"]["v6"].append({
                    "ip_address": str(IPV6_NET[droplet_id]), "netmask": IPV6_NET.prefixlen,
                    "gateway": str(IPV6_NET[1]), "type": "public"})
            return True

    def droplet(self, droplet_id: int) -> dict:
        with self._lock:
            droplet = self.data["droplets"].get(str(droplet_id))
            if droplet is None:
                raise not_found()
            return droplet

    def public_droplet(self, droplet: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in droplet.items() if not k.startswith("_")}

    def list_droplets(self, tag_name: str | None) -> list[dict]:
        with self._lock:
            return [self.public_droplet(d) for d in self.data["droplets"].values()
                    if tag_name is None or tag_name in d["tags"]]

    def delete_droplet(self, droplet_id: int) -> list[str]:
        """Delete it; returns the tags it carried (firewalls naming them change meaning)."""
        with self._lock:
            tags = list(self.droplet(droplet_id)["tags"])
            del self.data["droplets"][str(droplet_id)]
            for fw in self.data["firewalls"].values():
                if droplet_id in fw["droplet_ids"]:
                    fw["droplet_ids"].remove(droplet_id)
            return tags

    def droplet_actions(self, droplet_id: int) -> list[dict]:
        with self._lock:
            self.droplet(droplet_id)
            return [copy.deepcopy(a) for a in self.data["actions"].values()
                    if a["resource_id"] == droplet_id]

    def action(self, action_id: int) -> dict:
        with self._lock:
            action = self.data["actions"].get(str(action_id))
            if action is None:
                raise not_found()
            return copy.deepcopy(action)

    def pending_creates(self) -> list[tuple[dict, int]]:
        """Droplets still 'new' with their create action (for a restarted API)."""
        with self._lock:
            out = []
            for droplet in self.data["droplets"].values():
                if droplet["status"] != "new":
                    continue
                actions = [a for a in self.data["actions"].values()
                           if a["resource_id"] == droplet["id"] and a["type"] == "create"]
                if actions:
                    out.append((copy.deepcopy(droplet), actions[-1]["id"]))
            return out

    # --- firewalls -----------------------------------------------------------------
    def _firewall_body(self, body: dict, fw_id: str, created_at: str) -> dict:
        if not body.get("name"):
            raise unprocessable("name is required")
        droplet_ids = [int(i) for i in body.get("droplet_ids") or []]
        for droplet_id in droplet_ids:
            self.droplet(droplet_id)
        tags = list(body.get("tags") or [])
        self._require_tags(tags, "tags")
        inbound = _clean_rules(body.get("inbound_rules"), "inbound")
        outbound = _clean_rules(body.get("outbound_rules"), "outbound")
        for direction, rules, side in (("inbound_rules", inbound, "sources"),
                                       ("outbound_rules", outbound, "destinations")):
            for rule in rules:
                self._require_tags(rule[side].get("tags") or [], f"{direction}.{side}.tags")
        return {"id": fw_id, "name": body["name"], "status": "succeeded",
                "created_at": created_at, "pending_changes": [],
                "inbound_rules": inbound, "outbound_rules": outbound,
                "droplet_ids": droplet_ids, "tags": tags}

    def create_firewall(self, body: dict) -> dict:
        with self._lock:
            fw = self._firewall_body(body, str(uuid.uuid4()), now_iso())
            self.data["firewalls"][fw["id"]] = fw
            return copy.deepcopy(fw)

    def firewall(self, fw_id: str) -> dict:
        with self._lock:
            fw = self.data["firewalls"].get(fw_id)
            if fw is None:
                raise not_found()
            return fw

    def list_firewalls(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(list(self.data["firewalls"].values()))

    def update_firewall(self, fw_id: str, body: dict) -> tuple[dict, set[int]]:
        """PUT replaces the whole firewall; returns it and the droplets affected before/after."""
        with self._lock:
            old = self.firewall(fw_id)
            before = self.covered_droplets(old)
            fw = self._firewall_body(body, fw_id, old["created_at"])
            self.data["firewalls"][fw_id] = fw
            return copy.deepcopy(fw), before | self.covered_droplets(fw)

    def firewall_droplets(self, fw_id: str, droplet_ids: list, add: bool) -> set[int]:
        with self._lock:
            fw = self.firewall(fw_id)
            ids = [int(i) for i in droplet_ids or []]
            if not ids:
                raise unprocessable("droplet_ids is required")
            for droplet_id in ids:
                self.droplet(droplet_id)
                if add and droplet_id not in fw["droplet_ids"]:
                    fw["droplet_ids"].append(droplet_id)
                if not add and droplet_id in fw["droplet_ids"]:
                    fw["droplet_ids"].remove(droplet_id)
            return set(ids)

    def firewall_tags(self, fw_id: str, tags: Any, add: bool) -> set[int]:
        """Attach/detach the firewall by tag; returns the droplets covered before or after."""
        with self._lock:
            fw = self.firewall(fw_id)
            if not isinstance(tags, list) or not tags:
                raise unprocessable("tags is required")
            self._require_tags(tags, "tags")
            before = self.covered_droplets(fw)
            for tag in tags:
                if add and tag not in fw["tags"]:
                    fw["tags"].append(tag)
                if not add and tag in fw["tags"]:
                    fw["tags"].remove(tag)
            return before | self.covered_droplets(fw)

    def delete_firewall(self, fw_id: str) -> set[int]:
        with self._lock:
            affected = self.covered_droplets(self.firewall(fw_id))
            del self.data["firewalls"][fw_id]
            return affected

    def covered_droplets(self, fw: dict) -> set[int]:
        with self._lock:
            ids = set(fw["droplet_ids"])
            for droplet in self.data["droplets"].values():
                if set(droplet["tags"]) & set(fw["tags"]):
                    ids.add(droplet["id"])
            return ids

    def referencing(self, tags: set[str] | list[str]) -> set[int]:
        """Droplets behind a firewall whose inbound rules admit one of ``tags``: what they let
        in changes when a droplet carrying such a tag comes, goes, or is (un)tagged."""
        with self._lock:
            wanted, ids = set(tags), set()
            for fw in self.data["firewalls"].values():
                if any(wanted & set(r["sources"].get("tags") or []) for r in fw["inbound_rules"]):
                    ids |= self.covered_droplets(fw)
            return ids

    def effective_inbound(self, droplet_id: int) -> list[dict] | None:
        """Union of inbound rules of every firewall covering an active droplet, else None."""
        with self._lock:
            droplet = self.data["droplets"].get(str(droplet_id))
            if droplet is None or droplet["status"] != "active":
                return None
            rules: list[dict] = []
            for fw in self.data["firewalls"].values():
                if droplet_id in self.covered_droplets(fw):
                    rules.extend(copy.deepcopy(fw["inbound_rules"]))
            return rules

    # --- domains & records ---------------------------------------------------------
    def create_domain(self, body: dict) -> dict:
        name = (body.get("name") or "").strip().lower().rstrip(".")
        if not name or "." not in name:
            raise unprocessable("name must be a domain name such as example.com")
        with self._lock:
            if name in self.data["domains"]:
                raise unprocessable(f"{name} already exists")
            domain = {"name": name, "ttl": 1800, "zone_file": ""}
            self.data["domains"][name] = domain
            self.data["records"][name] = []
            self._add_record(name, {"type": "SOA", "name": "@", "data": "1800", "ttl": 1800})
            for i in (1, 2, 3):
                self._add_record(name, {"type": "NS", "name": "@",
                                        "data": f"ns{i}.digitalocean.com", "ttl": 1800})
            if body.get("ip_address"):
                self._add_record(name, {"type": "A", "name": "@", "data": body["ip_address"],
                                        "ttl": 1800})
            return copy.deepcopy(domain)

    def domain(self, name: str) -> dict:
        with self._lock:
            domain = self.data["domains"].get(name.lower())
            if domain is None:
                raise not_found()
            return copy.deepcopy(domain)

    def list_domains(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(list(self.data["domains"].values()))

    def delete_domain(self, name: str) -> None:
        with self._lock:
            self.domain(name)
            del self.data["domains"][name.lower()]
            del self.data["records"][name.lower()]

    def zones(self) -> dict[str, list[dict]]:
        """Every domain with its records: what the lab's DNS server serves."""
        with self._lock:
            return {name: copy.deepcopy(self.data["records"][name]) for name in self.data["domains"]}

    def _validate_record(self, rec: dict) -> None:
        if rec.get("type") not in RECORD_TYPES:
            raise unprocessable(f"type must be one of {', '.join(sorted(RECORD_TYPES))}")
        if not rec.get("name") or rec.get("data") in (None, ""):
            raise unprocessable("name and data are required")
        if rec["type"] in ("A", "AAAA"):
            try:
                ip = ipaddress.ip_address(rec["data"])
            except ValueError:
                raise unprocessable(f"data {rec['data']!r} is not an IP address") from None
            if (ip.version == 4) != (rec["type"] == "A"):
                raise unprocessable(f"data {rec['data']!r} does not match type {rec['type']}")

    def _add_record(self, domain: str, body: dict) -> dict:
        rec = {"id": self._new_id(), "type": body.get("type"), "name": body.get("name"),
               "data": body.get("data"), "priority": body.get("priority"),
               "port": body.get("port"), "ttl": body.get("ttl") or 1800,
               "weight": body.get("weight"), "flags": body.get("flags"), "tag": body.get("tag")}
        self._validate_record(rec)
        self.data["records"][domain].append(rec)
        return rec

    def create_record(self, domain: str, body: dict) -> dict:
        with self._lock:
            self.domain(domain)
            return copy.deepcopy(self._add_record(domain.lower(), body))

    def records(self, domain: str, name: str | None = None, rtype: str | None = None) -> list[dict]:
        with self._lock:
            self.domain(domain)
            return [copy.deepcopy(r) for r in self.data["records"][domain.lower()]
                    if (name is None or r["name"] == name) and (rtype is None or r["type"] == rtype)]

    def record(self, domain: str, record_id: int) -> dict:
        with self._lock:
            self.domain(domain)
            for rec in self.data["records"][domain.lower()]:
                if rec["id"] == record_id:
                    return rec
            raise not_found()

    def update_record(self, domain: str, record_id: int, body: dict) -> dict:
        with self._lock:
            rec = self.record(domain, record_id)
            updated = dict(rec)
            for key in ("type", "name", "data", "priority", "port", "ttl", "weight", "flags", "tag"):
                if body.get(key) is not None:
                    updated[key] = body[key]
            self._validate_record(updated)
            rec.update(updated)
            return copy.deepcopy(rec)

    def delete_record(self, domain: str, record_id: int) -> None:
        with self._lock:
            rec = self.record(domain, record_id)
            self.data["records"][domain.lower()].remove(rec)
