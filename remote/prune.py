"""Pruning a node: what goes, found first with reads only (``plan``: what `inv prune --dry-run`
lists), then taken away (``apply``), after each healthy release and on demand.

What goes: the release folders beyond RELEASES_KEEP (on the leader, which alone holds releases;
never ``current`` nor the one before it), the images only those releases used, also their copies
a swarm pushed to and pulled from the registry (``<registry>/<repository>:<tag>``, on every
node), dangling images, and build cache unused for 72 h. What stays: the live release and the
rollback targets with every image they use, and every volume (no command here names one).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from remote import commands as cmd
from remote import sync
from remote.host import Host


@dataclass(frozen=True)
class Doomed:
    """What the leader's releases say goes: release folders, and the image refs only they use."""

    releases: tuple[str, ...]
    refs: frozenset[str]            # local refs (repository:tag) of the releases that go
    kept: frozenset[str]            # local refs of the releases that stay (never removed)
    live: str | None = None
    staying: tuple[str, ...] = ()   # every release that stays, oldest first


def doomed(leader: Host, keep: int) -> Doomed:
    """Read the leader's releases: which go beyond ``keep``, and the images only they use."""
    found = sync.list_releases(leader)
    live = next((r.id for r in found if r.current), None)
    gone = set(sync.prunable([r.id for r in found], live, keep))

    def refs(release: sync.ReleaseInfo) -> set[str]:
        return {e.get("ref") for e in (release.meta.get("images") or {}).values() if e.get("ref")}
    return Doomed(releases=tuple(sorted(gone)),
                  refs=frozenset(ref for r in found if r.id in gone for ref in refs(r)),
                  kept=frozenset(ref for r in found if r.id not in gone for ref in refs(r)),
                  live=live, staying=tuple(r.id for r in found if r.id not in gone))


def same_image(ref: str, refs: frozenset[str]) -> bool:
    """``ref`` is one of ``refs``, or its copy in a registry (a swarm tags repository:tag as
    <registry>/<repository>:<tag> to push it, and its nodes pull it so)."""
    return ref in refs or any(ref.endswith("/" + r) for r in refs)


@dataclass(frozen=True)
class NodePlan:
    node: str
    releases: tuple[str, ...]       # release folders (the leader only)
    images: tuple[str, ...]         # image tags only pruned releases use, on this node
    dangling: tuple[str, ...]       # "<id> <size>" of each untagged image
    build_cache: str                # build cache reclaimable in all, as `docker system df` says ("" unknown)

    @property
    def empty(self) -> bool:
        return not (self.releases or self.images or self.dangling)


def plan(target: Host, gone: Doomed, releases: bool) -> NodePlan:
    """What pruning would take from ``target``, with reads only. ``releases``: it holds them (the leader)."""
    # Three reads, side by side on their own channels (after every release: its time is the deploy's).
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="prune-read") as pool:
        listed_read = pool.submit(target.run, cmd.list_image_refs(), "listing images")
        dangling_read = pool.submit(target.run, cmd.list_dangling_images(), "listing dangling images")
        usage_read = pool.submit(target.run, cmd.disk_usage(), "reading docker's disk use", check=False)
    listed = listed_read.result().stdout.split()
    images = sorted({r for r in listed if same_image(r, gone.refs) and not same_image(r, gone.kept)})
    dangling = [line.strip() for line in dangling_read.result().stdout.splitlines() if line.strip()]
    usage = usage_read.result().stdout
    cache = next((line.partition("|")[2].strip() for line in usage.splitlines()
                  if line.partition("|")[0].strip().lower() == "build cache"), "")
    return NodePlan(target.name, gone.releases if releases else (), tuple(images), tuple(dangling), cache)


@dataclass(frozen=True)
class Pruned:
    reclaimed: dict[str, str]       # what -> docker's "Total reclaimed space" line
    failed: dict[str, str]          # what -> the error's tail (the disk is no worse than before)


def apply(target: Host, node: NodePlan) -> Pruned:
    """Remove what ``node`` lists, then dangling images and build cache unused for 72 h. An image a
    container still uses is left (docker refuses it); a prune that fails is reported, not raised."""
    sync.remove_releases(target, node.releases)
    if node.images:
        target.run(cmd.remove_images(node.images), "removing old images", check=False)
    reclaimed: dict[str, str] = {}
    failed: dict[str, str] = {}
    kinds = ((cmd.prune_dangling_images(), "dangling images"), (cmd.prune_builder_cache(), "build cache"))
    with ThreadPoolExecutor(max_workers=len(kinds), thread_name_prefix="prune") as pool:
        ran = [(what, pool.submit(target.run, command, f"pruning {what}", check=False, timeout=600))
               for command, what in kinds]
    for what, done in ran:
        res = done.result()
        if res.ok:
            reclaimed[what] = next((l for l in res.stdout.splitlines() if "reclaimed" in l.lower()), "").strip()
        else:
            failed[what] = res.tail()
    return Pruned(reclaimed, failed)
