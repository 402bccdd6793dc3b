"""What this stack made in the DigitalOcean account, found with GET requests only
(``stack_inventory``), and removed (``remove``): the cloud half of `inv destroy`.

"This stack's" is decided from what the deploys write, never from a shared tag alone:
  droplets   node 1 named DROPLET_NAME carrying the first DROPLET_TAGS tag (as every task finds
             it), or any droplet carrying the cluster tag <name>-swarm named <name> or <name>-<k>;
  DNS        A records for DOMAIN and its SUBDOMAINS (what provision writes) that point at one of
             this stack's addresses (its droplets', and those known_hosts pinned with their keys);
  firewall   the one named after the droplet, unless it also guards droplets of others;
  SSH key    the key of SSH_KEY_PATH, registered under the name a deploy gives it, once no droplet
             outside this stack remains (DigitalOcean does not say which droplets a key went into);
  tags       the cluster tag and the operators' announcements on the droplets, unless another
             droplet carries them;
  data       volumes attached to the droplets or tagged with the cluster tag, snapshots of them or
             of the droplets or tagged so: removed only when asked (``include_data``).
The container registry is never removed: there is one per account, and its repositories carry
the compose image names (stack-api, ...), the same for every stack deployed from this code.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Sequence

from deploy.cloud.api import CloudError, CloudSpec, OnEvent, _call, _library_env, _log_event, _manager
from deploy.cloud.dns import _read_dns, dns_hosts
from deploy.cloud.droplets import public_ipv4
from deploy.cloud.firewall import _named_firewalls
from deploy.cloud.keys import _lookup_ssh_key, ssh_fingerprint
from deploy.cloud.registry import get_registry
from deploy.cloud.tags import cluster_tag, parse_presence


@dataclass(frozen=True)
class Item:
    """One resource to remove: what the listing shows and the API path that deletes it."""

    kind: str           # droplet | dns | firewall | ssh-key | tag | volume | snapshot
    name: str
    detail: str
    path: str           # DELETE /v2/<path>
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Kept:
    """Something this stack may have to do with that stays, and why."""

    what: str
    why: str


@dataclass(frozen=True)
class StackInventory:
    droplets: tuple[Item, ...] = ()
    records: tuple[Item, ...] = ()
    firewalls: tuple[Item, ...] = ()
    keys: tuple[Item, ...] = ()
    tags: tuple[Item, ...] = ()
    data: tuple[Item, ...] = ()             # volumes and snapshots: only with include_data
    kept: tuple[Kept, ...] = ()
    backups: tuple[str, ...] = ()           # droplets with DigitalOcean backups (they go with it)
    addresses: tuple[str, ...] = ()         # the public IPv4 of the droplets found
    names: tuple[str, ...] = ()             # the droplets found, node 1 first
    leader_ip: str | None = None            # node 1's public IPv4, while node 1 is there (the deploy lock)
    foreign_names: frozenset[str] = field(default_factory=frozenset)   # every other droplet's name
    swarm: bool = False

    def removals(self, include_data: bool) -> tuple[Item, ...]:
        """In the order they go. DNS first: a record left pointing at a deleted droplet's address
        would send the domain's visitors to whoever DigitalOcean hands that address next. Data
        after the droplets (a volume must be detached first) and before the tags; a tag that kept
        data carries stays (it is what finds that data next time)."""
        held = set() if include_data else {t for item in self.data for t in item.tags}
        tags = tuple(t for t in self.tags if t.name not in held)
        return (self.records + self.droplets + self.firewalls + self.keys
                + (self.data if include_data else ()) + tags)

    def empty(self, include_data: bool) -> bool:
        return not self.removals(include_data)


def _numbered(droplet_name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(droplet_name)}-([1-9][0-9]*)$")


def _is_ours(spec: CloudSpec, droplet: Any) -> bool:
    tags = set(droplet.tags or [])
    if cluster_tag(spec.droplet_name) in tags:
        return droplet.name == spec.droplet_name or bool(_numbered(spec.droplet_name).match(droplet.name))
    return droplet.name == spec.droplet_name and (not spec.tags or spec.tags[0] in tags)


def _node_order(spec: CloudSpec, droplet: Any) -> tuple[int, int]:
    match = _numbered(spec.droplet_name).match(droplet.name)
    return (int(match.group(1)) if match else 1, int(droplet.id))


def stack_inventory(spec: CloudSpec, known_addresses: Collection[str] = (),
                    on_event: OnEvent = _log_event) -> StackInventory:
    """Everything of this stack's still in the account, and what stays with why; GET requests only.
    ``known_addresses``: addresses this machine pinned with the stack's host keys (its droplets'
    past addresses, which DNS may still point at after a droplet was deleted by hand)."""
    tag = cluster_tag(spec.droplet_name)
    with _library_env(spec):
        every = _call(spec, "listing droplets", lambda: _manager(spec).get_all_droplets(), on_event)
        mine = sorted((d for d in every if _is_ours(spec, d)), key=lambda d: _node_order(spec, d))
        others = [d for d in every if not _is_ours(spec, d)]
        ids = {int(d.id) for d in mine}
        kept: list[Kept] = [Kept(f"droplet {d.name} (id {d.id})", f"it carries neither the tag {spec.tags[0]} nor "
                                 f"{tag}: another's, whatever its name") for d in others
                            if d.name == spec.droplet_name and spec.tags]
        droplets = tuple(Item("droplet", d.name, f"id {d.id}, {public_ipv4(d.networks) or 'no public IPv4'}, "
                              f"{_region(d)}", f"droplets/{d.id}") for d in mine)
        theirs = {public_ipv4(d.networks) for d in others}
        addresses = tuple(a for a in {public_ipv4(d.networks) for d in mine} | set(known_addresses)
                          if a and a not in theirs)
        records = _records(spec, addresses, kept, on_event)
        firewalls = _firewalls(spec, ids, tag, kept, on_event)
        keys = _keys(spec, len(others), kept, on_event)
        tags = _tags(spec, mine, others, tag, on_event)
        data = _data(spec, ids, tag, on_event)
        swarm = any(tag in (d.tags or []) for d in mine)
        if swarm:
            _registry(spec, kept, on_event)
    return StackInventory(droplets=droplets, records=records, firewalls=firewalls, keys=keys, tags=tags, data=data,
                          kept=tuple(kept), backups=tuple(f"{d.name}: {len(d.backup_ids)} backup(s)" for d in mine
                                                          if getattr(d, "backup_ids", None)),
                          addresses=tuple(sorted(a for a in (public_ipv4(d.networks) for d in mine) if a)),
                          names=tuple(d.name for d in mine), foreign_names=frozenset(d.name for d in others),
                          swarm=swarm, leader_ip=next((public_ipv4(d.networks) for d in mine
                                                       if d.name == spec.droplet_name), None))


def _region(droplet: Any) -> str:
    return str(droplet.region.get("slug") if isinstance(droplet.region, dict) else droplet.region)


def _records(spec: CloudSpec, addresses: Sequence[str], kept: list[Kept], on_event: OnEvent) -> tuple[Item, ...]:
    if not spec.domain:
        return ()
    hosts = dns_hosts(spec.domain, spec.subdomains)
    zone, _, records = _read_dns(spec, hosts, on_event)
    if zone is None:
        return ()
    out = []
    for host in hosts:
        rel = "@" if host == zone else host[: -(len(zone) + 1)]
        for rec in (r for r in records if r.type == "A" and r.name == rel):
            if rec.data in addresses:
                out.append(Item("dns", host, f"A -> {rec.data}, zone {zone}", f"domains/{zone}/records/{rec.id}"))
            else:
                kept.append(Kept(f"DNS A {host} -> {rec.data}", "it points at an address that is not this stack's"))
    return tuple(out)


def _firewalls(spec: CloudSpec, ids: set[int], tag: str, kept: list[Kept], on_event: OnEvent) -> tuple[Item, ...]:
    out = []
    for fw in _named_firewalls(spec, on_event):
        strangers = set(fw.get("droplet_ids") or []) - ids
        foreign_tags = set(fw.get("tags") or []) - {tag}
        if strangers or foreign_tags:
            whom = ", ".join([*(f"droplet {i}" for i in sorted(strangers)), *(f"tag {t}" for t in sorted(foreign_tags))])
            kept.append(Kept(f"firewall {fw['name']} (id {fw['id']})", f"it also guards {whom}, not this stack's"))
        else:
            out.append(Item("firewall", fw["name"], f"id {fw['id']}", f"firewalls/{fw['id']}"))
    return tuple(out)


def _keys(spec: CloudSpec, other_droplets: int, kept: list[Kept], on_event: OnEvent) -> tuple[Item, ...]:
    if not spec.ssh_public_key:
        kept.append(Kept("the SSH key a deploy registered", "SSH_KEY_PATH's public key is not on this machine, "
                         "so the account's key cannot be told apart"))
        return ()
    found = _lookup_ssh_key(spec, on_event)
    if found is None:
        return ()
    what = f"SSH key {found.name} ({ssh_fingerprint(spec.ssh_public_key)})"
    if found.name != spec.ssh_key_name:
        kept.append(Kept(what, f"it was registered under another name than a deploy gives it ({spec.ssh_key_name}): "
                               "not uploaded by stackdeploy"))
        return ()
    if other_droplets:
        kept.append(Kept(what, f"{other_droplets} other droplet(s) in the account may have been created with it "
                               "(DigitalOcean does not say which)"))
        return ()
    return (Item("ssh-key", found.name, f"id {found.id}", f"account/keys/{found.id}"),)


def _tags(spec: CloudSpec, mine: list[Any], others: list[Any], tag: str, on_event: OnEvent) -> tuple[Item, ...]:
    """The cluster tag (also when only volumes still carry it) and the operators' announcements
    on this stack's droplets, unless a droplet of others carries them too."""
    carried = {t for d in mine for t in (d.tags or []) if t == tag or parse_presence(t)}
    if tag not in carried and _call(spec, f"reading the tag {tag}", lambda: _manager(spec).get_data(f"tags/{tag}"),
                                    on_event, missing_ok=True) is not None:
        carried.add(tag)
    shared = {t for d in others for t in (d.tags or [])}
    return tuple(Item("tag", t, "the cluster tag" if t == tag else "an operator's announcement", f"tags/{t}")
                 for t in sorted(carried - shared))


def _data(spec: CloudSpec, ids: set[int], tag: str, on_event: OnEvent) -> tuple[Item, ...]:
    volumes = [v for v in _call(spec, "listing volumes", lambda: _manager(spec).get_data("volumes")["volumes"], on_event)
               if set(v.get("droplet_ids") or []) & ids or tag in (v.get("tags") or [])]
    volume_ids = {v["id"] for v in volumes}
    snapshots = [s for s in _call(spec, "listing snapshots", lambda: _manager(spec).get_data("snapshots")["snapshots"],
                                  on_event)
                 if tag in (s.get("tags") or [])
                 or (s.get("resource_type") == "droplet" and str(s.get("resource_id")) in {str(i) for i in ids})
                 or (s.get("resource_type") == "volume" and s.get("resource_id") in volume_ids)]
    return (tuple(Item("volume", v["name"], f"id {v['id']}, {v.get('size_gigabytes')} GiB", f"volumes/{v['id']}",
                       tuple(v.get("tags") or [])) for v in volumes)
            + tuple(Item("snapshot", s["name"], f"id {s['id']}, of {s.get('resource_type')} {s.get('resource_id')}",
                         f"snapshots/{s['id']}", tuple(s.get("tags") or [])) for s in snapshots))


def _registry(spec: CloudSpec, kept: list[Kept], on_event: OnEvent) -> None:
    found = get_registry(spec, on_event)
    if found is not None:
        kept.append(Kept(f"container registry {found.name}", "an account has one, shared by its stacks, and its "
                         "repositories carry the compose image names (the same for every stack deployed from this "
                         "code): remove old tags with `doctl registry repository delete-tag`, then run its garbage "
                         "collection"))


def remove_stack(spec: CloudSpec, items: Sequence[Item], on_event: OnEvent = _log_event) -> list[Item]:
    """Delete ``items`` in the order given; one already gone counts as removed (a second run, or
    an operator in the control panel, got there first). Returns the items removed."""
    done = []
    with _library_env(spec):
        for item in items:
            if item.kind == "volume":
                _wait_detached(spec, item, on_event)
            _call(spec, f"deleting {item.kind} {item.name}",
                  lambda item=item: _manager(spec).get_data(item.path, type="DELETE"), on_event, missing_ok=True)
            on_event("info", f"deleted {item.kind} {item.name} ({item.detail})")
            done.append(item)
    return done


def _wait_detached(spec: CloudSpec, item: Item, on_event: OnEvent) -> None:
    """DigitalOcean detaches a volume from a deleted droplet a little later, and refuses to delete
    it while it is attached: wait until it is free (bounded by the droplet-active timeout)."""
    deadline = time.monotonic() + spec.active_timeout
    while True:
        found = _call(spec, f"reading volume {item.name}", lambda: _manager(spec).get_data(item.path), on_event,
                      missing_ok=True)
        if found is None or not found["volume"].get("droplet_ids"):
            return
        if time.monotonic() >= deadline:
            raise CloudError(f"volume {item.name} is still attached to droplet(s) {found['volume']['droplet_ids']}",
                             "detach it in the DigitalOcean control panel, then run `inv destroy` again")
        time.sleep(1.0)
