"""Droplets: finding ours by name (and first tag), creating one, settling a race between two
deploys that both created it, waiting for it to be active and for its sshd to answer."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

import digitalocean

from deploy.cloud.api import (CloudError, CloudSpec, ConcurrentDeploy, OnEvent, _call, _library_env,
                              _log_event, _manager)
from deploy.cloud.tags import cluster_tag, parse_presence


@dataclass(frozen=True)
class DropletInfo:
    id: int
    name: str
    region: str
    size: str
    status: str
    public_ipv4: str | None
    created: bool
    private_ipv4: str | None = None     # its VPC address (what Swarm nodes talk over)


# --- lookup -------------------------------------------------------------------------------
def public_ipv4(networks: dict | None) -> str | None:
    """The droplet's public IPv4: type == "public", wherever it is listed."""
    for net in (networks or {}).get("v4") or []:
        if net.get("type") == "public" and net.get("ip_address"):
            return net["ip_address"]
    return None


def private_ipv4(networks: dict | None) -> str | None:
    """The droplet's VPC IPv4: type == "private", wherever it is listed."""
    for net in (networks or {}).get("v4") or []:
        if net.get("type") == "private" and net.get("ip_address"):
            return net["ip_address"]
    return None


def _info(droplet: Any, created: bool) -> DropletInfo:
    region = droplet.region.get("slug") if isinstance(droplet.region, dict) else droplet.region
    return DropletInfo(id=int(droplet.id), name=droplet.name, region=str(region),
                       size=str(getattr(droplet, "size_slug", "") or ""), status=droplet.status,
                       public_ipv4=public_ipv4(droplet.networks), created=created,
                       private_ipv4=private_ipv4(droplet.networks))


def _named(spec: CloudSpec, on_event: OnEvent) -> list[Any]:
    """Our droplets with DROPLET_NAME (carrying the first tag), oldest (lowest id) first."""
    tag = spec.tags[0] if spec.tags else None
    listed = _call(spec, "listing droplets",
                   lambda: _manager(spec).get_all_droplets(tag_name=tag), on_event)
    matches = [d for d in listed if d.name == spec.droplet_name]
    if not matches and tag:
        # A same-name droplet without our tag is somebody else's: never adopt or duplicate it.
        every = _call(spec, "listing droplets", lambda: _manager(spec).get_all_droplets(), on_event)
        if any(d.name == spec.droplet_name and tag not in (d.tags or []) for d in every):
            raise CloudError(f"a droplet named {spec.droplet_name!r} exists without tag {tag!r}",
                             f"add the tag {tag!r} to it in the control panel to adopt it, "
                             "or set DROPLET_NAME to another name")
        matches = [d for d in every if d.name == spec.droplet_name]  # ours, created meanwhile
    return sorted(matches, key=lambda d: int(d.id))


def _one_named(name: str, matches: list[Any]) -> Any | None:
    if len(matches) > 1:
        ids = ", ".join(str(d.id) for d in matches)
        raise CloudError(f"{len(matches)} droplets are named {name!r} (ids {ids})",
                         "if another deploy is creating the droplet right now, wait a minute and run again "
                         "(the newer one deletes itself); otherwise delete or rename the extra droplets, "
                         "or set DROPLET_NAME to a unique name")
    return matches[0] if matches else None


def _find(spec: CloudSpec, on_event: OnEvent) -> Any | None:
    return _one_named(spec.droplet_name, _named(spec, on_event))


def find_droplet(spec: CloudSpec) -> DropletInfo | None:
    """Read-only lookup by name (and first tag); None when absent."""
    with _library_env(spec):
        droplet = _find(spec, _log_event)
    _refuse_swarm_leader(spec, droplet)
    return _info(droplet, created=False) if droplet else None


def _refuse_swarm_leader(spec: CloudSpec, droplet: Any | None) -> None:
    """One droplet (NODES=1) asked of a droplet that leads a swarm (it carries the cluster tag
    since a NODES > 1 deploy): Compose beside the swarm's stack would fight it for 80/443."""
    tag = cluster_tag(spec.droplet_name)
    if droplet is None or spec.nodes != 1 or tag not in (getattr(droplet, "tags", None) or []):
        return
    raise CloudError(f"droplet {droplet.name} is node 1 of a Docker Swarm (it carries the tag {tag}), "
                     "and NODES is 1", f"set NODES (or --nodes) to the swarm's node count: its droplets carry "
                     f"the tag {tag}. Back to one droplet is not automated: shrink to 2 nodes, then on "
                     f"{droplet.name} `docker stack rm <project>` and `docker swarm leave --force`, delete "
                     f"{droplet.name}-2, remove the tag {tag} from {droplet.name}, and deploy with NODES=1 "
                     "(the data volumes are kept)")


# --- creating one, and waiting for it ------------------------------------------------------
def _create_droplet(spec: CloudSpec, key_id: int, user_data: str, on_event: OnEvent,
                    extra_tags: tuple[str, ...] = (), vpc_uuid: str | None = None) -> Any:
    """``vpc_uuid`` None: the region's default VPC (the field is left out)."""
    # The body is ours, not Droplet.create()'s: the library always sends "vpc_uuid": null,
    # which DigitalOcean's contract does not allow (a string, or the field left out).
    body = {"name": spec.droplet_name, "region": spec.region, "size": spec.size,
            "image": spec.image, "ssh_keys": [key_id], "tags": [*spec.tags, *extra_tags],
            "user_data": user_data, "ipv6": False, "monitoring": True}
    if vpc_uuid:
        body["vpc_uuid"] = vpc_uuid
    api = digitalocean.Droplet(token=spec.token)

    def create() -> Any:
        answer = api.get_data("droplets/", type="POST", params=body)
        return digitalocean.Droplet(token=spec.token, **answer["droplet"])
    # A POST that failed with 5xx/timeout may still have created the droplet: look first.
    made = _call(spec, "creating the droplet", create, on_event,
                 before_retry=lambda: _find(spec, on_event))
    on_event("info", f"created droplet {spec.droplet_name} (id {made.id}) in {spec.region}")
    return made


def _settle_creation(spec: CloudSpec, made: Any, on_event: OnEvent) -> None:
    """Two deploys that found no droplet both create one (DigitalOcean has no create-if-absent).
    Right after creating, each lists the droplets of that name: the oldest (lowest id, as
    DigitalOcean numbers them in creation order) stays; a run that created a newer one deletes
    it and fails before touching the firewall or DNS, naming the run that came first."""
    older = [d for d in _named(spec, on_event) if int(d.id) < int(made.id)]
    if not older:
        return  # ours is the oldest: a newer one's run removes it
    first = older[0]
    holder = next((p for p in map(parse_presence, first.tags or []) if p), None)
    by = f", by {holder.who} from {holder.address}" if holder else ""
    what = (f"another deploy created droplet {spec.droplet_name} first (id {first.id}, created "
            f"{getattr(first, 'created_at', '?')}{by})")
    try:
        _call(spec, "deleting the duplicate droplet", made.destroy, on_event, missing_ok=True)
    except CloudError as exc:
        raise CloudError(f"{what}; the duplicate this run created (id {made.id}) could not be deleted: "
                         f"{exc.message}", f"delete droplet {made.id} in the control panel, then run "
                         "`inv deploy` again") from None
    on_event("warning", f"deleted droplet {made.id}: {what}")
    raise ConcurrentDeploy(f"{what}; this run deleted the droplet it had just created (id {made.id}) and "
                           "did not touch the firewall or DNS",
                           "wait for that deploy to finish, then run `inv deploy` again: it finds that droplet")


def _wait_active(spec: CloudSpec, droplet: Any, on_event: OnEvent) -> Any:
    deadline = time.monotonic() + spec.active_timeout
    interval = 0.5
    while droplet.status != "active":
        if droplet.status in ("off", "archive"):
            raise CloudError(f"droplet {spec.droplet_name} (id {droplet.id}) is {droplet.status!r}",
                             "power it on in the DigitalOcean control panel, or delete it so a "
                             "new one is created")
        if time.monotonic() >= deadline:
            raise CloudError(
                f"droplet {spec.droplet_name} (id {droplet.id}) is still {droplet.status!r} "
                f"after {spec.active_timeout:g} s",
                "check it in the DigitalOcean control panel; raise DO_ACTIVE_TIMEOUT if the "
                "region is slow, or delete the droplet and run again")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 5.0)
        _call(spec, "waiting for the droplet", droplet.load, on_event)
    return droplet


def ssh_banner(host: str, port: int, timeout: float) -> str | None:
    """The SSH server's identification line, or None when nothing SSH-like answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            while b"\n" not in data and len(data) < 512:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].strip().decode("ascii", "replace")
    return line if line.startswith("SSH-") else None


def wait_for_ssh(host: str, port: int, timeout: float) -> bool:
    """Poll with backoff until sshd sends its banner; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    interval = 0.25
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if ssh_banner(host, port, min(5.0, remaining)):
            return True
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 5.0)
