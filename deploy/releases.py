"""Which release a task acts on, from the leader's release history (pure: no I/O).

    rollback    the named release, or the newest healthy one before the live one that was not
                rolled away from
    up          the newest release pushed and built after the live one, never live yet
"""
from __future__ import annotations

from typing import Mapping, Sequence

from core.errors import OperatorError
from remote import sync
from remote.migration_reversal import Verdict
from remote.sync import ReleaseInfo

ROLLBACK_OK = ("success", "rolled-back")   # releases that were live and healthy


def live(found: Sequence[ReleaseInfo]) -> str | None:
    return next((r.id for r in found if r.current), None)


def rollback_target(found: Sequence[ReleaseInfo], release: str | None) -> ReleaseInfo:
    """The named release, or the newest good one before the live one that was not rolled back
    from. Only releases that were live and healthy, with their image map, qualify."""
    current = live(found)
    good = [r for r in found if r.outcome in ROLLBACK_OK and r.meta.get("images") and r.id != current]
    names = ", ".join(r.id for r in good[-5:]) or "none"
    if release is not None:
        pick = next((r for r in good if r.id == release), None)
        if pick is None:
            known = next((r for r in found if r.id == release), None)
            why = "does not exist" if known is None else (
                "is the live release" if release == current else f"never became healthy (outcome {known.outcome or 'none'})")
            raise OperatorError(f"release {release} {why}; it cannot be rolled back to",
                                f"pick one of the releases that ran healthy: {names} (see `inv releases`)")
        return pick
    # A release the operator rolled away from ("rolled-back") was rejected: the one to go back to
    # is the newest older release that served until a deploy replaced it. By name, either.
    older = [r for r in good if (current is None or r.id < current) and r.outcome == "success"]
    if not older:
        rejected = [r.id for r in good if (current is None or r.id < current)]
        raise OperatorError(f"no release older than {current or '(none)'} ran healthy without being rolled back "
                            "from: nothing to roll back to",
                            (f"name one that was rolled back from, `inv rollback --release {rejected[-1]}`, or "
                             if rejected else "") + "list releases with `inv releases`")
    return older[-1]


def migrations_in_the_way(found: Sequence[ReleaseInfo], chosen: ReleaseInfo) -> list[tuple[str, list[str], str | None]]:
    """The migrations releases newer than ``chosen`` applied and no rollback took back since, each
    as (release, migrations, the backup taken before them): the schema ``chosen``'s code has never
    seen."""
    out = []
    for r in found:
        record = r.meta.get("migrations") or {}
        # undone: a rollback took them back (--unapply, --restore); a later release that applies
        # them again records them as its own
        applied = record.get("applied") if r.id > chosen.id and not record.get("undone") else None
        if applied:
            out.append((r.id, list(applied), (r.meta.get("migrations") or {}).get("backup")))
    return out


def schema_refusal(chosen: ReleaseInfo, in_the_way: list[tuple[str, list[str], str | None]],
                   named: bool, reversal: Sequence[Verdict] | str | None = None) -> OperatorError:
    """Why a rollback across migrations does not happen by itself, and the ways on: unapplying
    them when Django can without losing a row (``reversal``: its verdicts, or why it could not
    tell), restoring the backup taken before them, or keeping the schema."""
    names = [m for _, applied, _ in in_the_way for m in applied]
    by = ", ".join(r for r, _, _ in in_the_way)
    again = f"inv rollback{f' --release {chosen.id}' if named else ''}"
    first_release, _, backup = in_the_way[0]
    restore = (f"`{again} --restore` (puts the database back to backup {backup}, taken before them, and lists what "
               "was written since, which is lost, before it asks)"
               if backup else f"`inv restore --to '<a moment before release {first_release} migrated>'`, then "
                              f"`{again} --keep-schema` (no backup was taken before them: --skip-backup)")
    hint = (f"if they only add (columns, tables) the old code runs on the new schema: `{again} --keep-schema`; if they "
            f"drop or rename, put the data back with the code: {restore}")
    if isinstance(reversal, str):
        hint += f". Whether Django could take them back is not known: {reversal}"
    elif reversal:
        lossy = [v for v in reversal if not v.lossless]
        if not lossy:
            hint = (f"Django can take them back without losing a row: `{again} --unapply` unapplies them, then the "
                    f"release goes live; or {hint}")
        else:
            hint += ". Not --unapply: " + "; ".join(f"{v.migration} {', '.join(v.loses)}" for v in lossy)
    return OperatorError(
        f"release {chosen.id} expects an older schema: {len(names)} migration(s) applied since by {by} "
        f"({', '.join(names)}); nothing changed", hint)


def pushed(found: Sequence[ReleaseInfo]) -> ReleaseInfo | None:
    """The newest release, when `inv push` left it built and it never went live (nor failed)."""
    newest = found[-1] if found else None
    current = live(found)
    if newest is None or newest.current or newest.outcome is not None or not newest.meta.get("images"):
        return None
    return None if current is not None and newest.id < current else newest


def mount_changes(compose_file: Mapping, live_meta: Mapping | None, chosen: ReleaseInfo) -> frozenset[str]:
    """Services whose bind-mounted files differ between the live release and ``chosen`` (Traefik's
    config): only they are recreated, as recreating Traefik for nothing would drop requests.
    Nothing live: every container is new."""
    if live_meta is None:
        return frozenset()
    live_manifest = live_meta.get("manifest")
    changed = (sum(sync.diff_manifests(live_manifest, chosen.meta.get("manifest") or {}), [])
               if live_manifest is not None else None)
    return frozenset(sync.services_for_mounts(compose_file, changed))


def line(r: ReleaseInfo) -> str:
    """`* <id>  success  2026-11-26T13:00:00+00:00  by ops@laptop  api=3f2a1b4c9d0e ...` (* = live)."""
    imgs = " ".join(f"{n}={str(e.get('id', '')).removeprefix('sha256:')[:12]}"
                    for n, e in sorted((r.meta.get("images") or {}).items()))
    migrated = r.meta.get("migrations") or {}
    applied = (f"  migrated {', '.join(migrated['applied'])} after backup {migrated.get('backup') or '(none: --skip-backup)'}"
               if migrated.get("applied") else "")
    return (f"{'*' if r.current else ' '} {r.id}  {r.outcome or 'never-live':11} {r.created or '?'}"
            f"  by {r.meta.get('by') or '?'}  {imgs or '(no image map)'}{applied}")
