"""Releases on the droplet: delta push by content hash, atomic switch, retention, .env.

The paths are remote.layout.ReleaseLayout's; every command goes through a Host.

A new release starts as a hard-link copy of the current one (``cp -al``) and then
receives only the files whose sha256/mode changed, as one tar.gz. Every file we
write into a release is replaced by rename, never rewritten in place, so a
shared inode of an older release is never modified.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from remote import commands as cmd
from remote import stack_secrets
from remote.errors import RemoteError
from remote.layout import RELEASE_ENV, RELEASE_IMAGES, RELEASE_META, RELEASE_STACK
from remote.host import Host

IGNORED_DIRS = frozenset({"node_modules", "__pycache__", ".git", "dist", ".pytest_cache",
                          ".venv", ".secrets"})   # .secrets: a local compose run's password files
RM_BATCH = 400  # paths per rm command: keeps each SSH exec request well under sshd's limit

Manifest = dict[str, dict[str, Any]]


class ReleaseError(RemoteError):
    """A release operation failed; ``hint`` says what to do."""


@dataclass(frozen=True)
class Drift:
    """How a release on the droplet differs from the manifest it was published with."""

    changed: list[str] = field(default_factory=list)   # content, mode or link target differs
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return sorted({*self.changed, *self.missing, *self.extra})

    def describe(self, limit: int = 8) -> str:
        parts = [f"{len(v)} {k} ({', '.join(v[:limit])}{', ...' if len(v) > limit else ''})"
                 for k, v in (("changed", self.changed), ("missing", self.missing), ("extra", self.extra)) if v]
        return "; ".join(parts)


@dataclass(frozen=True)
class PushResult:
    release_id: str
    changed: list[str]
    removed: list[str]
    bytes_sent: int
    files_total: int
    previous_release: str | None
    changed_services: set[str] | None = None
    previous_images: dict[str, dict] = field(default_factory=dict)   # the live release's image map
    drift: Drift = field(default_factory=Drift)                      # the live release vs its manifest


@dataclass(frozen=True)
class LocalRelease:
    """The stack as it is here, read once per run: what is pushed, its id, its compose file."""

    root: Path
    manifest: Manifest
    release_id: str
    compose: Mapping[str, Any]
    compose_dir: str = ""
    # Files rendered by the deployer (relative path -> bytes) that replace or join the stack's.
    overlay: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def read(cls, root: Path, compose_file: str = "compose.yml", now: datetime | None = None,
             overlay: Mapping[str, bytes] | None = None) -> "LocalRelease":
        overlay = dict(overlay or {})
        manifest = local_manifest(root, overlay)
        return cls(root=Path(root), manifest=manifest, release_id=new_release_id(manifest, now),
                   compose=read_compose(Path(root) / compose_file), compose_dir=posixpath.dirname(compose_file),
                   overlay=overlay)


def load_yaml(text: str) -> Any:
    """yaml.safe_load, through libyaml when PyYAML has it (about ten times faster)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_compose(path: Path) -> dict[str, Any]:
    """The parsed compose file ({} when there is none)."""
    return (load_yaml(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


@dataclass(frozen=True)
class ReleaseInfo:
    id: str
    created: str | None
    outcome: str | None
    current: bool
    meta: dict = field(default_factory=dict, compare=False, repr=False)


# --- local, pure-ish ------------------------------------------------------------------

def is_ignored(name: str, is_dir: bool) -> bool:
    """Never shipped: build output, caches, VCS data and local secrets (.env files)."""
    if is_dir:
        return name in IGNORED_DIRS
    if name == ".env" or (name.startswith(".env.") and not name.endswith(".example")):
        return True
    return name.endswith((".pyc", ".pyo")) or name == RELEASE_META


def local_manifest(root: Path, overlay: Mapping[str, bytes] | None = None) -> Manifest:
    """relative posix path -> {"sha256", "mode"} (or {"link", "mode"} for symlinks); an
    overlay file wins over the stack's file of the same path."""
    root = Path(root)
    if not root.is_dir():
        raise ReleaseError(f"stack folder {root} does not exist",
                           "check the stack path setting (it must contain the compose file)")
    out: Manifest = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if not is_ignored(d, True) and not os.path.islink(os.path.join(dirpath, d)))
        entries = filenames + [d for d in os.listdir(dirpath)
                               if os.path.islink(os.path.join(dirpath, d))
                               and os.path.isdir(os.path.join(dirpath, d))]
        for name in sorted(set(entries)):
            if is_ignored(name, False):
                continue
            full = os.path.join(dirpath, name)
            rel = Path(full).relative_to(root).as_posix()
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = {"link": os.readlink(full), "mode": 0o777}
            elif stat.S_ISREG(st.st_mode):
                out[rel] = {"sha256": _sha256(full), "mode": stat.S_IMODE(st.st_mode)}
    for rel, data in (overlay or {}).items():
        out[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "mode": 0o644}
    return out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_digest(manifest: Mapping[str, Mapping[str, Any]]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_release_id(manifest: Mapping[str, Mapping[str, Any]], now: datetime | None = None) -> str:
    """Sortable UTC timestamp to the millisecond + short content hash, e.g.
    ``20250101T120000123Z-1a2b3c4d``: releases made within one second still sort in order
    (rollback and retention go by that order). Valid as a Docker image tag."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{manifest_digest(manifest)[:8]}"


def same_entry(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Same content and mode, write bits aside: a published release's files are read-only
    (commands.make_files_read_only) while the stack's own copies are writable."""
    if a is None or b is None:
        return a is b
    return ({**a, "mode": a.get("mode", 0) & ~0o222} == {**b, "mode": b.get("mode", 0) & ~0o222})


def diff_manifests(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(changed or new paths, removed paths), both sorted."""
    changed = sorted(p for p, e in new.items() if not same_entry(old.get(p), e))
    removed = sorted(p for p in old if p not in new)
    return changed, removed


def build_archive(root: Path, paths: Iterable[str], extra: Mapping[str, bytes] | None = None) -> bytes:
    """tar.gz of the given relative paths (modes kept, owner names dropped) plus ``extra``
    in-memory files (the release metadata travels compressed in the same upload)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for rel in paths:
            info = tar.gettarinfo(str(Path(root) / rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(Path(root) / rel, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return buf.getvalue()


def services_for_changes(compose_dict: Mapping[str, Any], changed_paths: Iterable[str],
                         compose_dir: str = "") -> set[str]:
    """Services whose build context (or Dockerfile) contains one of the changed paths.

    Paths are relative to the stack root; ``compose_dir`` is the compose file's folder
    relative to that root (build contexts are relative to it).
    """
    contexts: dict[str, list[str]] = {}
    for name, svc in (compose_dict.get("services") or {}).items():
        build = (svc or {}).get("build")
        if build is None:
            continue
        if isinstance(build, str):
            context, dockerfile = build, None
        else:
            context, dockerfile = build.get("context", "."), build.get("dockerfile")
        ctx = _norm(posixpath.join(compose_dir, context))
        roots = [ctx]
        if dockerfile:
            roots.append(_norm(posixpath.join(ctx, dockerfile)))
        contexts[name] = roots
    hit: set[str] = set()
    for path in changed_paths:
        p = _norm(path)
        for name, roots in contexts.items():
            if any(r in ("", ".") or p == r or p.startswith(r + "/") for r in roots):
                hit.add(name)
    return hit


def services_for_mounts(compose_dict: Mapping[str, Any], changed_paths: Iterable[str] | None,
                        compose_dir: str = "") -> set[str]:
    """Services that bind-mount a changed file or folder from the release (``./traefik/x.yml``).

    Docker resolves the ``current`` symlink when a container is created, so such a container
    keeps reading the old release's copy until it is recreated; compose sees no config change.
    ``changed_paths=None`` means "any": every service with a relative bind mount.
    """
    mounts: dict[str, list[str]] = {}
    for name, svc in (compose_dict.get("services") or {}).items():
        for vol in (svc or {}).get("volumes") or []:
            if isinstance(vol, str):
                source = vol.split(":", 1)[0]
            elif isinstance(vol, Mapping) and vol.get("type", "bind") == "bind":
                source = str(vol.get("source", ""))
            else:
                continue
            if source.startswith("."):
                mounts.setdefault(name, []).append(_norm(posixpath.join(compose_dir, source)))
    if changed_paths is None:
        return set(mounts)
    hit: set[str] = set()
    for path in changed_paths:
        p = _norm(path)
        for name, sources in mounts.items():
            if any(p == src or p.startswith(src + "/") for src in sources):
                hit.add(name)
    return hit


def _norm(path: str) -> str:
    n = posixpath.normpath(path)
    return "" if n == "." else n


# --- remote ---------------------------------------------------------------------------

def current_release(target: Host) -> str | None:
    out = target.run(cmd.readlink_current(target.layout), "reading the current release").stdout.strip()
    return posixpath.basename(out) if out else None


def release_ids(target: Host) -> list[str]:
    out = target.run(cmd.list_release_dirs(target.layout), "listing releases").stdout
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def release_state(target: Host) -> tuple[str | None, list[str], dict | None, int | None]:
    """(current release id, all release ids, current release metadata, MB free under releases/)
    in one round trip."""
    out = target.run(cmd.release_state(target.layout), "reading the release state").stdout
    head, _, rest = out.partition(cmd.STATE_RELEASES + "\n")
    listing, _, meta_text = rest.partition(cmd.STATE_META + "\n")
    fields = dict(line.partition(":")[::2] for line in head.splitlines())
    link = fields.get("current", "").strip()
    free_kb = fields.get("free_kb", "").strip()
    ids = sorted(line.strip() for line in listing.splitlines() if line.strip())
    try:
        meta = json.loads(meta_text) if meta_text.strip() else None
    except json.JSONDecodeError:
        meta = None
    return (posixpath.basename(link) if link else None), ids, meta, (int(free_kb) // 1024 if free_kb.isdigit() else None)


def _require_free_space(target: Host, free_mb: int | None, min_free_mb: int) -> None:
    """Refuse before anything is uploaded: a disk that fills up mid-push or mid-build fails late
    and obscurely (SFTP says only 'Failure')."""
    if free_mb is None or free_mb >= min_free_mb:
        return
    raise ReleaseError(
        f"only {free_mb} MB free in {target.layout.releases} on {target.host}; a release and its image "
        f"builds need MIN_FREE_MB={min_free_mb} MB",
        "free space on the droplet: `docker system prune` removes unused images and build cache, a lower "
        "RELEASES_KEEP keeps fewer releases, or resize the droplet's disk; lower MIN_FREE_MB only if the "
        "stack's builds need less")


def _after_failed_upload(target: Host, release_id: str, archive_bytes: int, exc: RemoteError) -> None:
    """Remove the half-made release (the upload and staging folder would otherwise hold the disk
    until the next push) and, when the disk is what ran out, say so instead of SFTP's bare
    'Failure'. Best effort: over a dropped connection the original error is the one to report."""
    layout = target.layout
    try:
        target.run(cmd.remove_releases(layout, [posixpath.basename(layout.upload(release_id)),
                                                posixpath.basename(layout.staging(release_id))]),
                   "removing the half-made release")
        free_mb = release_state(target)[3]
    except Exception:  # noqa: BLE001 - the connection may be the fault; report the original
        return
    needed_mb = max(1, archive_bytes // (1024 * 1024))
    if free_mb is not None and free_mb <= needed_mb * 4:
        raise ReleaseError(
            f"the droplet's disk is full: no space left in {layout.releases} on {target.host} while uploading "
            f"release {release_id} ({free_mb} MB free now, its upload alone is {needed_mb} MB); nothing was "
            f"switched and the half-made release was removed",
            "free space on the droplet: `docker system prune` removes unused images and build cache, a lower "
            "RELEASES_KEEP keeps fewer releases, or resize the droplet's disk; MIN_FREE_MB makes the deployer "
            "refuse before uploading when less than that is free") from exc


def read_release_meta(target: Host, release_id: str) -> dict | None:
    res = target.run(cmd.cat_release_meta(target.layout, release_id), check=False)
    if not res.ok:
        return None
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        return None


def parse_fingerprint(text: str) -> Manifest:
    sums, _, rest = text.partition(cmd.FINGERPRINT_MODES + "\n")
    modes_text, _, links_text = rest.partition(cmd.FINGERPRINT_LINKS + "\n")
    out: Manifest = {}
    modes = dict((p, int(m, 8)) for m, _, p in (l.partition(" ") for l in modes_text.splitlines()) if p)
    for line in sums.splitlines():
        digest, _, path = line.partition("  ")
        path = path.removeprefix("./")
        if path:
            out[path] = {"sha256": digest, "mode": modes.get(path, 0)}
    for line in links_text.splitlines():
        path, _, link = line.partition("\t")
        if path:
            out[path] = {"link": link, "mode": 0o777}
    return out


def drift(target: Host, release_id: str, manifest: Mapping[str, Mapping[str, Any]]) -> Drift:
    """Compare a published release's files with its manifest (files changed behind our back)."""
    # the deployer's own files; the servers' passwords are never hashed into an artifact
    own = (RELEASE_META, RELEASE_ENV, RELEASE_IMAGES, RELEASE_STACK, f"{stack_secrets.SECRETS_DIR}/*")
    found = parse_fingerprint(target.run(cmd.release_fingerprint(target.layout, release_id, own),
                                         f"reading release {release_id}'s files", timeout=300).stdout)
    return Drift(changed=sorted(p for p in manifest if p in found and not same_entry(found[p], manifest[p])),
                 missing=sorted(p for p in manifest if p not in found),
                 extra=sorted(p for p in found if p not in manifest))


def _put_server_secrets(target: Host, release_dir: str, env_content: str) -> None:
    """The files PostgreSQL and Redis read their passwords from (remote/stack_secrets.py), over
    sftp only, like the env file."""
    found = stack_secrets.files_from_env_text(env_content)
    if not found:
        return
    target.run(stack_secrets.make_dirs(release_dir), "preparing the servers' password files")
    for path, content in found.items():
        target.put(posixpath.join(release_dir, path), content.encode("utf-8"), mode=0o444)


def push(target: Host, local: LocalRelease, env_content: str, by: str = "", min_free_mb: int = 0) -> PushResult:

    """Create release ``local.release_id`` on the droplet with its env file (0600, over sftp only:
    it holds secrets) and return what was sent. Does not switch ``current``. Fails before any
    upload when less than ``min_free_mb`` is free under releases/."""
    layout = target.layout
    manifest = local.manifest
    previous, existing, current_meta, free_mb = release_state(target)
    _require_free_space(target, free_mb, min_free_mb)
    if previous is not None and previous not in existing:
        previous = None  # dangling symlink: treat as a first push
    old_manifest = (current_meta or {}).get("manifest", {}) if previous else {}
    changed, removed = diff_manifests(old_manifest, manifest)
    # Files changed on the droplet behind our back are shared (hard links) with the new release:
    # they are shipped again, and strays left out, so the new release is what the manifest says.
    found = drift(target, previous, old_manifest) if previous and old_manifest else Drift()
    changed = sorted({*changed, *(p for p in found.changed + found.missing if p in manifest)})
    removed = sorted({*removed, *(p for p in found.changed + found.extra if p not in manifest)})

    release_id = local.release_id
    n = 2
    while release_id in existing:  # same content pushed twice within one second
        release_id = f"{local.release_id}-{n}"
        n += 1
    staging = layout.staging(release_id)
    clear_stale = cmd.remove_releases(layout, [posixpath.basename(staging)])
    if previous and old_manifest:
        to_unlink = [RELEASE_META] + changed + removed  # the copied metadata is replaced too
        batches = [to_unlink[i:i + RM_BATCH] for i in range(0, len(to_unlink), RM_BATCH)] or [[]]
        target.run(cmd.chain(clear_stale,
                             cmd.hardlink_copy(layout.release(previous), staging),
                             cmd.remove_paths(staging, batches[0]),
                             cmd.prune_empty_dirs(staging) if removed else ""),
                   "preparing the release from the previous one")
        for batch in batches[1:]:
            target.run(cmd.remove_paths(staging, batch), "removing old files")
    else:
        changed, removed = sorted(manifest), []
        target.run(cmd.chain(clear_stale, cmd.make_dir(staging)),
                   "creating the release folder")

    meta = {"id": release_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "by": by,
            "previous": previous, "outcome": None, "files_total": len(manifest), "images": {},
            "changed": changed, "removed": removed, "manifest": manifest}
    archive = build_archive(local.root, [p for p in changed if p not in local.overlay],
                            {RELEASE_META: json.dumps(meta, indent=1, sort_keys=True).encode(),
                             **{p: local.overlay[p] for p in changed if p in local.overlay}})
    try:
        target.put(layout.upload(release_id), archive)
        target.run(cmd.extract_archive(layout.upload(release_id), staging), "unpacking the release", timeout=600)
        target.put(posixpath.join(staging, RELEASE_ENV), env_content.encode("utf-8"), mode=0o600)
        _put_server_secrets(target, staging, env_content)
        target.run(cmd.chain(cmd.make_files_read_only(staging), cmd.rename(staging, layout.release(release_id))),
                   "publishing the release")
    except RemoteError as exc:
        _after_failed_upload(target, release_id, len(archive), exc)
        raise
    services = services_for_changes(local.compose, changed + removed, local.compose_dir) if local.compose else None
    return PushResult(release_id=release_id, changed=changed, removed=removed,
                      bytes_sent=len(archive), files_total=len(manifest),
                      previous_release=previous, changed_services=services,
                      previous_images=((current_meta or {}).get("images") or {}) if previous else {},
                      drift=found)


def previous_release(target: Host, ids: list[str] | None = None) -> str:
    """The newest release older than ``current``: what a rollback returns to."""
    ids = release_ids(target) if ids is None else ids
    cur = current_release(target)
    older = [r for r in ids if cur is None or r < cur]
    if not older:
        raise ReleaseError(f"no release older than {cur or '(none)'} to roll back to in "
                           f"{target.layout.releases}",
                           "list releases with `inv releases` and name one explicitly")
    return older[-1]


def switch(target: Host, release_id: str | None = None) -> str:
    """Point ``current`` at ``release_id`` (default: the release before the current one)."""
    ids = release_ids(target)
    if release_id is None:
        release_id = previous_release(target, ids)
    elif release_id not in ids:
        known = ", ".join(ids[-5:]) or "none"
        raise ReleaseError(f"release {release_id} does not exist in {target.layout.releases} "
                           f"(latest: {known})", "pick an id from `inv releases`")
    target.run(cmd.switch_current(target.layout, release_id), "switching the current release")
    return release_id


def record_outcome(target: Host, release_id: str, outcome: str) -> None:
    """Store the deploy outcome (e.g. success/failed/rolled-back) in the release metadata."""
    if not outcome or "\n" in outcome:
        raise ValueError("outcome must be a short single-line word such as 'success'")
    update_release_meta(target, release_id, outcome=outcome,
                        outcome_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def update_release_meta(target: Host, release_id: str, **fields: Any) -> None:
    """Set ``fields`` in a release's metadata (the outcome, the migrations it applied)."""
    meta = read_release_meta(target, release_id)
    if meta is None:
        raise ReleaseError(f"release {release_id} has no metadata in {target.layout.releases}",
                           "pick an id from `inv releases`")
    meta.update(fields)
    target.put(target.layout.meta(release_id), json.dumps(meta, indent=1, sort_keys=True).encode())


def set_images(target: Host, release_id: str, images: Mapping[str, Mapping[str, str]], override: str) -> None:
    """Record the images a release runs (service -> {"ref", "id"}) in its metadata and its
    compose override, before it ever goes live."""
    meta = read_release_meta(target, release_id)
    if meta is None:
        raise ReleaseError(f"release {release_id} has no metadata in {target.layout.releases}",
                           "deploy again: the release was not completely uploaded")
    meta["images"] = {k: dict(v) for k, v in images.items()}
    target.put(target.layout.images_file(release_id), override.encode("utf-8"))
    target.put(target.layout.meta(release_id), json.dumps(meta, indent=1, sort_keys=True).encode())


def list_releases(target: Host) -> list[ReleaseInfo]:
    """Releases oldest first, with creation time, recorded outcome and which one is current."""
    cur = current_release(target)
    out = target.run(cmd.read_all_release_meta(target.layout), "reading release metadata").stdout
    chunks: dict[str, list[str]] = {}
    name = None
    for line in out.splitlines():
        if line.startswith("=== "):
            name = line[4:].strip()
            chunks[name] = []
        elif name is not None:
            chunks[name].append(line)
    metas: dict[str, dict] = {}
    for rid, lines in chunks.items():
        try:
            metas[rid] = json.loads("\n".join(lines)) if "".join(lines).strip() else {}
        except json.JSONDecodeError:
            metas[rid] = {}
    return [ReleaseInfo(id=rid, created=metas[rid].get("created"), outcome=metas[rid].get("outcome"),
                        current=(rid == cur), meta=metas[rid])
            for rid in sorted(metas)]


def prunable(ids: Iterable[str], cur: str | None, keep: int) -> list[str]:
    """The releases pruning removes: all but the newest ``keep``; never ``cur`` nor the one before it."""
    if keep < 1:
        raise ValueError("keep must be at least 1 (the current release)")
    ids = sorted(ids)
    protected = set(ids[-keep:])
    if cur in ids:
        protected.add(cur)
        older = [r for r in ids if r < cur]
        if older:
            protected.add(older[-1])
    return [r for r in ids if r not in protected]


def remove_releases(target: Host, doomed: Iterable[str]) -> None:
    doomed = list(doomed)
    if doomed:
        target.run(cmd.remove_releases(target.layout, doomed), "removing old releases", timeout=600)


def prune(target: Host, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` releases; never ``current`` nor the one before it."""
    doomed = prunable(release_ids(target), current_release(target), keep)
    remove_releases(target, doomed)
    return doomed
