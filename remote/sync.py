"""Releases on the droplet: delta push by content hash, atomic switch, retention, .env.

Layout (base is /opt/<project> by default, chosen by the caller)::

    <base>/releases/<release-id>/        one folder per push, with .release.json
    <base>/current -> releases/<id>      switched atomically (ln -sfn tmp + mv -T)
    <base>/shared/.env                   0600, uploaded by sftp only

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
import secrets
import stat
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

import fabric

from remote import commands as cmd
from remote.errors import RemoteError

IGNORED_DIRS = frozenset({"node_modules", "__pycache__", ".git", "dist", ".pytest_cache",
                          ".venv"})
RM_BATCH = 400  # paths per rm command: keeps each SSH exec request well under sshd's limit

Manifest = dict[str, dict[str, Any]]


class ReleaseError(RemoteError):
    """A release operation failed; ``hint`` says what to do."""


@dataclass(frozen=True)
class PushResult:
    release_id: str
    changed: list[str]
    removed: list[str]
    bytes_sent: int
    files_total: int
    previous_release: str | None
    changed_services: set[str] | None = None


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
    return name.endswith((".pyc", ".pyo")) or name == cmd.RELEASE_META


def local_manifest(root: Path) -> Manifest:
    """relative posix path -> {"sha256", "mode"} (or {"link", "mode"} for symlinks)."""
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
    """Sortable UTC timestamp + short content hash, e.g. ``20250101T120000Z-1a2b3c4d``."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{manifest_digest(manifest)[:8]}"


def diff_manifests(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(changed or new paths, removed paths), both sorted."""
    changed = sorted(p for p, e in new.items() if old.get(p) != e)
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

def _run(conn: fabric.Connection, command: str, what: str, timeout: float | None = None) -> str:
    res = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
    if res.exited != 0:
        err = (res.stderr or res.stdout).strip().splitlines()
        raise ReleaseError(f"{what} failed on {conn.host}: {err[-1] if err else f'exit {res.exited}'}",
                           "check the deploy user can write the base folder and the disk is not full")
    return res.stdout


def _check_base(base: str) -> None:
    if not PurePosixPath(base).is_absolute():
        raise ReleaseError(f"remote base folder {base!r} is not an absolute path",
                           "set the remote base to an absolute path such as /opt/<project>")


def current_release(conn: fabric.Connection, base: str) -> str | None:
    out = _run(conn, cmd.readlink_current(base), "reading the current release").strip()
    return posixpath.basename(out) if out else None


def release_ids(conn: fabric.Connection, base: str) -> list[str]:
    out = _run(conn, cmd.list_release_dirs(base), "listing releases")
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def release_state(conn: fabric.Connection, base: str) -> tuple[str | None, list[str], dict | None]:
    """(current release id, all release ids, current release metadata) in one round trip."""
    out = _run(conn, cmd.release_state(base), "reading the release state")
    head, _, rest = out.partition(cmd.STATE_RELEASES + "\n")
    listing, _, meta_text = rest.partition(cmd.STATE_META + "\n")
    link = head.strip().removeprefix("current:").strip()
    ids = sorted(line.strip() for line in listing.splitlines() if line.strip())
    try:
        meta = json.loads(meta_text) if meta_text.strip() else None
    except json.JSONDecodeError:
        meta = None
    return (posixpath.basename(link) if link else None), ids, meta


def read_release_meta(conn: fabric.Connection, base: str, release_id: str) -> dict | None:
    res = conn.run(cmd.cat_release_meta(base, release_id), hide=True, warn=True, in_stream=False)
    if res.exited != 0:
        return None
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        return None


def _put_replace(sftp, path: str, data: bytes, mode: int | None = None) -> None:
    """Write via a temp name + rename: never through a (possibly hard-linked) inode."""
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    with sftp.open(tmp, "wb") as fh:
        if mode is not None:
            fh.chmod(mode)  # before any byte is written
        fh.set_pipelined(True)
        fh.write(data)
    sftp.posix_rename(tmp, path)


def write_env(conn: fabric.Connection, base: str, content: str) -> str:
    """Install <base>/shared/.env (0600, owned by the SSH user) atomically; returns its path.

    The content holds secrets: it goes over sftp only, never on a command line or in a log.
    """
    _check_base(base)
    _run(conn, cmd.prepare_layout(base), "creating the release layout")
    dest = posixpath.join(base, "shared", ".env")
    sftp = conn.sftp()
    _put_replace(sftp, dest, content.encode("utf-8"), mode=0o600)
    return dest


def push(conn: fabric.Connection, base: str, source: Path, now: datetime | None = None,
         compose_file: str | None = "compose.yml") -> PushResult:
    """Create a new release from ``source`` and return what was sent. Does not switch ``current``."""
    _check_base(base)
    manifest = local_manifest(source)
    previous, existing, current_meta = release_state(conn, base)
    if previous is not None and previous not in existing:
        previous = None  # dangling symlink: treat as a first push
    old_manifest = (current_meta or {}).get("manifest", {}) if previous else {}
    changed, removed = diff_manifests(old_manifest, manifest)

    release_id = new_release_id(manifest, now)
    n = 2
    while release_id in existing:  # same content pushed twice within one second
        release_id = f"{new_release_id(manifest, now)}-{n}"
        n += 1
    staging = posixpath.join(cmd.releases_dir(base), f".staging-{release_id}")
    clear_stale = cmd.remove_releases(base, [f".staging-{release_id}"])
    if previous and old_manifest:
        to_unlink = [cmd.RELEASE_META] + changed + removed  # the copied metadata is replaced too
        batches = [to_unlink[i:i + RM_BATCH] for i in range(0, len(to_unlink), RM_BATCH)] or [[]]
        _run(conn, cmd.chain(clear_stale, cmd.hardlink_copy(cmd.release_dir(base, previous), staging),
                             cmd.remove_paths(staging, batches[0]),
                             cmd.prune_empty_dirs(staging) if removed else ""),
             "preparing the release from the previous one")
        for batch in batches[1:]:
            _run(conn, cmd.remove_paths(staging, batch), "removing old files")
    else:
        changed, removed = sorted(manifest), []
        _run(conn, cmd.chain(clear_stale, cmd.make_dir(staging)), "creating the release folder")

    meta = {"id": release_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "previous": previous, "outcome": None, "files_total": len(manifest),
            "changed": changed, "removed": removed, "manifest": manifest}
    archive = build_archive(source, changed,
                            {cmd.RELEASE_META: json.dumps(meta, indent=1, sort_keys=True).encode()})
    remote_archive = posixpath.join(cmd.releases_dir(base), f".upload-{release_id}.tar.gz")
    _put_replace(conn.sftp(), remote_archive, archive)
    _run(conn, cmd.chain(cmd.extract_archive(remote_archive, staging),
                         cmd.rename(staging, cmd.release_dir(base, release_id))),
         "unpacking and publishing the release", timeout=600)
    bytes_sent = len(archive)

    services = None
    if compose_file and (Path(source) / compose_file).is_file():
        import yaml  # local import: only needed when mapping changes to services

        compose_dict = yaml.safe_load((Path(source) / compose_file).read_text()) or {}
        services = services_for_changes(compose_dict, changed + removed,
                                        posixpath.dirname(compose_file))
    return PushResult(release_id=release_id, changed=changed, removed=removed,
                      bytes_sent=bytes_sent, files_total=len(manifest),
                      previous_release=previous, changed_services=services)


def previous_release(conn: fabric.Connection, base: str, ids: list[str] | None = None) -> str:
    """The newest release older than ``current``: what a rollback returns to."""
    ids = release_ids(conn, base) if ids is None else ids
    cur = current_release(conn, base)
    older = [r for r in ids if cur is None or r < cur]
    if not older:
        raise ReleaseError(f"no release older than {cur or '(none)'} to roll back to in "
                           f"{cmd.releases_dir(base)}",
                           "list releases with `inv releases` and name one explicitly")
    return older[-1]


def switch(conn: fabric.Connection, base: str, release_id: str | None = None) -> str:
    """Point ``current`` at ``release_id`` (default: the release before the current one)."""
    _check_base(base)
    ids = release_ids(conn, base)
    if release_id is None:
        release_id = previous_release(conn, base, ids)
    elif release_id not in ids:
        known = ", ".join(ids[-5:]) or "none"
        raise ReleaseError(f"release {release_id} does not exist in {cmd.releases_dir(base)} "
                           f"(latest: {known})", "pick an id from `inv releases`")
    _run(conn, cmd.switch_current(base, release_id), "switching the current release")
    return release_id


def record_outcome(conn: fabric.Connection, base: str, release_id: str, outcome: str) -> None:
    """Store the deploy outcome (e.g. success/failed/rolled_back) in the release metadata."""
    if not outcome or "\n" in outcome:
        raise ValueError("outcome must be a short single-line word such as 'success'")
    meta = read_release_meta(conn, base, release_id)
    if meta is None:
        raise ReleaseError(f"release {release_id} has no metadata in {cmd.releases_dir(base)}",
                           "pick an id from `inv releases`")
    meta["outcome"] = outcome
    meta["outcome_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _put_replace(conn.sftp(), posixpath.join(cmd.release_dir(base, release_id), cmd.RELEASE_META),
                 json.dumps(meta, indent=1, sort_keys=True).encode())


def list_releases(conn: fabric.Connection, base: str) -> list[ReleaseInfo]:
    """Releases oldest first, with creation time, recorded outcome and which one is current."""
    cur = current_release(conn, base)
    out = _run(conn, cmd.read_all_release_meta(base), "reading release metadata")
    metas: dict[str, dict] = {}
    name = None
    chunks: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("=== "):
            name = line[4:].strip()
            chunks[name] = []
        elif name is not None:
            chunks[name].append(line)
    for rid, lines in chunks.items():
        try:
            metas[rid] = json.loads("\n".join(lines)) if "".join(lines).strip() else {}
        except json.JSONDecodeError:
            metas[rid] = {}
    return [ReleaseInfo(id=rid, created=metas[rid].get("created"), outcome=metas[rid].get("outcome"),
                        current=(rid == cur), meta=metas[rid])
            for rid in sorted(metas)]


def prune(conn: fabric.Connection, base: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` releases; never ``current`` nor the one before it."""
    if keep < 1:
        raise ValueError("keep must be at least 1 (the current release)")
    ids = release_ids(conn, base)
    cur = current_release(conn, base)
    protected = set(ids[-keep:])
    if cur in ids:
        protected.add(cur)
        older = [r for r in ids if r < cur]
        if older:
            protected.add(older[-1])
    doomed = [r for r in ids if r not in protected]
    if doomed:
        _run(conn, cmd.remove_releases(base, doomed), "removing old releases", timeout=600)
    return doomed
