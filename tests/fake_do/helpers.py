"""A real DropletBackend for tests: machines are loopback addresses we own.

It records every call so tests can assert what the fake API asked of the machines, and
can hold a create until released (a droplet that stays "new").
"""
from __future__ import annotations

import threading

TOKEN = "dop_v1_fake_test_token_1234567890"   # the token of the fake API in tests/fake_do/conftest.py


class RecordingBackend:
    def __init__(self, ip: str = "127.0.0.1", hold: bool = False) -> None:
        self.ip = ip
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.created: list[dict] = []
        self.deleted: list[int] = []
        self.firewalls: list[tuple[int, list[dict]]] = []
        self.tagged: list[tuple[int, list[dict], dict[str, list[int]]]] = []
        self.lock = threading.Lock()

    vpc_range = "10.110.0.0/16"

    def create(self, droplet_id, name, ssh_public_keys, user_data, tags, private_ip=None) -> str:
        with self.lock:
            self.created.append({"id": droplet_id, "name": name, "keys": list(ssh_public_keys),
                                 "user_data": user_data, "tags": list(tags), "private_ip": private_ip})
        self.release.wait()
        return self.ip

    def delete(self, droplet_id: int) -> None:
        with self.lock:
            self.deleted.append(droplet_id)

    def apply_firewall(self, droplet_id: int, inbound_rules: list[dict],
                       tagged: dict[str, list[int]] | None = None) -> None:
        with self.lock:
            self.firewalls.append((droplet_id, inbound_rules))
            self.tagged.append((droplet_id, inbound_rules, dict(tagged or {})))

    def rules_for(self, droplet_id: int) -> list[dict] | None:
        with self.lock:
            applied = [rules for did, rules in self.firewalls if did == droplet_id]
        return applied[-1] if applied else None


def ssh_allowed_from(rules: list[dict]) -> list[str]:
    return [a for r in rules if r["ports"] == "22" for a in r["sources"].get("addresses", [])]
