"""The images a release runs: one ref per built service, tagged with the release that built it.

A release keeps its image map (service -> ref and image id) in its metadata and in
compose.release.yml, an override that pins every built service to its ref. Services whose build
inputs did not change keep the ref of the release that built them, so their containers are not
recreated; rolling back means starting a release's own refs again, never rebuilding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import yaml

from remote import commands as cmd
from remote.host import Host

MISSING = "missing"


@dataclass(frozen=True)
class ImagePlan:
    refs: dict[str, str]                                  # service -> image ref this release runs
    build: set[str] = field(default_factory=set)          # services built for this release
    reasons: dict[str, str] = field(default_factory=dict)  # service -> why it is built


def repository(project: str, service: str, definition: Mapping[str, Any]) -> str:
    """The image repository of a built service: the compose file's image name without its tag
    (services sharing an image share a repository), else <project>-<service>."""
    image = str((definition or {}).get("image") or f"{project}-{service}")
    name, _, tag = image.rpartition(":")
    return name if name and "/" not in tag else image


def built_services(compose: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {n: d or {} for n, d in (compose.get("services") or {}).items() if (d or {}).get("build") is not None}


def plan(compose: Mapping[str, Any], project: str, release_id: str, previous: Mapping[str, str] | None,
         changed: set[str] | None, present: Mapping[str, str]) -> ImagePlan:
    """What to build for ``release_id``. ``previous``: the live release's refs; ``changed``: services
    whose build inputs changed (None: build all); ``present``: ref -> image id on the droplet."""
    services = built_services(compose)
    reasons: dict[str, str] = {}
    for name in services:
        old = (previous or {}).get(name)
        if changed is None:
            reasons[name] = "full deploy"
        elif name in changed:
            reasons[name] = "build inputs changed"
        elif not old:
            reasons[name] = "no image yet"
        elif present.get(old, MISSING) == MISSING:
            reasons[name] = f"image {old} is not on the droplet"
    # Services sharing a repository share a ref: build one, build them all.
    rebuilt_repos = {repository(project, n, services[n]) for n in reasons}
    refs, build = {}, set()
    for name, definition in services.items():
        repo = repository(project, name, definition)
        if repo in rebuilt_repos:
            refs[name] = f"{repo}:{release_id}"
            build.add(name)
            reasons.setdefault(name, f"shares its image with {', '.join(sorted(n for n in reasons if repository(project, n, services[n]) == repo))}")
        else:
            refs[name] = (previous or {})[name]
    return ImagePlan(refs=refs, build=build, reasons=reasons)


def keep_unchanged(plan_: ImagePlan, built_ids: Mapping[str, str], previous: Mapping[str, str] | None,
                   previous_ids: Mapping[str, str]) -> dict[str, str]:
    """After a build: a service whose new image is identical to the one it runs now keeps its old
    ref, so an unchanged service is not recreated just because it was rebuilt (full deploys)."""
    refs = dict(plan_.refs)
    for name in plan_.build:
        old = (previous or {}).get(name)
        if old and built_ids.get(refs[name]) and built_ids[refs[name]] == previous_ids.get(old):
            refs[name] = old
    return refs


def override(refs: Mapping[str, str], release_id: str) -> str:
    """compose.release.yml: pins each built service to its ref."""
    header = f"# Written by stackdeploy for release {release_id}: the image each built service runs.\n"
    return header + yaml.safe_dump({"services": {n: {"image": r} for n, r in sorted(refs.items())}},
                                   sort_keys=True)


def lookup(target: Host, refs: Iterable[str]) -> dict[str, str]:
    """ref -> image id on the droplet, or MISSING."""
    refs = sorted({r for r in refs if r})
    if not refs:
        return {}
    out = target.run(cmd.image_ids(refs), "looking up images").stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        image_id, *tags = line.split()
        for tag in tags:
            found[tag] = image_id
    return {r: found.get(r, MISSING) for r in refs}
