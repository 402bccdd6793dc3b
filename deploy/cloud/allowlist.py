"""Operators on the SSH allowlist: each run announces its operator on the droplet, and the
firewall is written to allow SSH from every operator announced lately."""
from __future__ import annotations

import dataclasses
from typing import Any

import digitalocean

from deploy.cloud.api import CloudSpec, OnEvent, _call
from deploy.cloud.firewall import FirewallResult, _ensure_firewall
from deploy.cloud.tags import Presence, _tag_safe, now_s, parse_presence, presence_tag

# Each operator who provisions is announced on the droplet with a tag naming their address;
# the firewall allows SSH from every operator announced within ALLOWLIST_TTL (the newest
# address of each), so two deploys at once never lock each other out.
ALLOWLIST_ROUNDS = 3  # writes of the firewall while operators keep arriving


def _operators(spec: CloudSpec, droplet: Any, on_event: OnEvent) -> tuple[list[Presence], list[Presence]]:
    """(live, retired) operators announced on the droplet, read afresh: live is the newest
    announcement of each operator within ALLOWLIST_TTL; the others are retired."""
    _call(spec, "reading the droplet's tags", droplet.load, on_event)
    announced = sorted(filter(None, map(parse_presence, droplet.tags or [])), key=lambda p: -p.since)
    live: dict[str, Presence] = {}
    retired: list[Presence] = []
    for p in announced:
        if p.who in live or now_s() - p.since > spec.allowlist_ttl:
            retired.append(p)
        else:
            live[p.who] = p
    return list(live.values()), retired


def _announce(spec: CloudSpec, droplet: Any, operator_ip: str, on_event: OnEvent) -> list[str]:
    """Announce this operator on the droplet (no write while a recent announcement stands),
    remove retired announcements, and return every live operator's address."""
    live, retired = _operators(spec, droplet, on_event)
    me = _tag_safe(spec.operator)
    mine = next((p for p in live if p.who == me), None)
    if mine is None or mine.address != operator_ip or now_s() - mine.since > spec.allowlist_ttl / 2:
        tag = digitalocean.Tag(token=spec.token, name=presence_tag(operator_ip, now_s(), spec.operator))
        _call(spec, "announcing this operator on the droplet", tag.create, on_event)   # same name: same tag
        _call(spec, "announcing this operator on the droplet",
              lambda: tag.add_droplets([int(droplet.id)]), on_event)
        retired += [mine] if mine else []
        live = [p for p in live if p.who != me] + [Presence(operator_ip, now_s(), me, tag.name)]
    for old in retired:
        _call(spec, "removing an old operator announcement",
              digitalocean.Tag(token=spec.token, name=old.tag).delete, on_event, missing_ok=True)
    return sorted({p.address for p in live})


def _ensure_allowlist(spec: CloudSpec, droplet: Any, operator_ip: str, on_event: OnEvent,
                      cluster: str | None = None) -> FirewallResult:
    """Write the firewall from the operators announced, then read them again: one who was
    announced meanwhile (a concurrent deploy) gets the firewall written again with them in.
    ``droplet`` holds the announcements (a cluster's first node); ``cluster``: see _ensure_firewall."""
    allowed = _announce(spec, droplet, operator_ip, on_event)
    status = "unchanged"
    for _ in range(ALLOWLIST_ROUNDS):
        result = _ensure_firewall(spec, int(droplet.id), operator_ip, allowed, on_event, cluster)
        status = result.status if status == "unchanged" else status
        now = sorted({p.address for p in _operators(spec, droplet, on_event)[0]})
        if now == allowed:
            return dataclasses.replace(result, status=status)
        on_event("info", f"operators changed while the firewall was written ({', '.join(now)}): writing it again")
        allowed = now
    on_event("warning", "operators kept arriving while the firewall was written; run `inv provision` again "
                        "to be sure every deploying operator is allowed")
    return dataclasses.replace(result, status=status)
