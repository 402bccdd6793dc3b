"""`inv rollback`: a previous healthy release live again, without a build. Across migrations
applied since that release its code would run on a schema it has never seen, so such a
rollback is refused unless the operator says how the schema follows:

    rollback                 find -> connect -> lock -> choose (refused across migrations) ->
                             the release goes live -> verify
    rollback --keep-schema   the same, the schema left as it is (migrations that only add)
    rollback --unapply       ... choose -> Django says each migration in the way is reversible and
                             loses no row -> the live release unapplies them -> the release goes
                             live -> verify
    rollback --restore       ... choose -> what the restore loses, listed -> typed name ->
                             backup now (undoes it) -> stop the writers -> restore the backup
                             taken before the migrations -> the release goes live -> verify
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from core.errors import OperatorError
from deploy import backups, confirm, migrations, releases, steps
from deploy.backup_steps import read_status, take
from deploy.backups import RestoreInputError
from deploy.flows import backup as backup_flow
from deploy.flows import reach
from deploy.flows.inspect import verify
from deploy.flows.release import mount_changes
from deploy.report.run import Run
from deploy.runtime import Candidate, Runtime, for_cluster
from deploy.settings import Settings
from deploy.wiring import REAL_EDGES, Edges
from remote import sync
from remote.host import Host
from remote.sync import ReleaseInfo


def rollback(run: Run, settings: Settings, release: str | None, edges: Edges = REAL_EDGES,
             keep_schema: bool = False, restore: bool = False, yes: bool = False, ask=input,
             unapply: bool = False) -> None:
    """Start a previous successful release again: its files, env snapshot and images; no rebuild.
    Across migrations applied since that release: refused, unless ``keep_schema`` (the operator
    knows them to be backward compatible) or ``restore`` (the database goes back to the backup
    taken before them, after the operator has seen what that loses and typed the droplet's name)
    or ``unapply`` (the live release takes them back, when Django can do it without losing a row)."""
    chosen_ways = [f for f, on in (("--keep-schema", keep_schema), ("--restore", restore), ("--unapply", unapply)) if on]
    if len(chosen_ways) > 1:
        raise RestoreInputError(f"{' and '.join(chosen_ways)} contradict each other: --keep-schema leaves the schema as "
                                "it is, --restore puts the database back to a backup, --unapply takes the migrations "
                                "back; nothing was changed",
                                "pick one (`inv releases` shows what each release migrated)")
    cluster = reach.find(run, settings, edges)
    runtime = for_cluster(cluster, settings, edges)
    with reach.connected(run, settings, edges, cluster.nodes) as inventory:
        leader = inventory.targets[0]
        with steps.locked(run, leader, release or "(previous)", settings.lock_wait):
            with run.step("choose-release") as step:
                found = sync.list_releases(leader)
                current, chosen = releases.live(found), releases.rollback_target(found, release)
                why = runtime.can_return_to(leader, chosen.id, chosen.meta.get("images") or {})
                if why:
                    raise OperatorError(f"release {chosen.id} cannot start again: {why}",
                                        "deploy that release's sources again, or pick another release from "
                                        "`inv releases`")
                in_the_way = releases.migrations_in_the_way(found, chosen)
                names = [m for _, applied, _ in in_the_way for m in applied]
                if (restore or unapply) and not in_the_way:
                    raise RestoreInputError(f"no migration was applied since release {chosen.id}: "
                                            f"{'--restore' if restore else '--unapply'} has nothing to undo, and "
                                            "nothing was changed",
                                            f"`inv rollback{f' --release {chosen.id}' if release else ''}` alone puts it back")
                if in_the_way and not (keep_schema or restore or unapply):
                    verdicts = migrations.reversal(run, leader, runtime, _compose_file(settings), names)
                    raise releases.schema_refusal(chosen, in_the_way, named=release is not None, reversal=verdicts)
                if in_the_way and unapply:
                    _require_lossless(run, leader, runtime, settings, chosen, names, named=release is not None)
                if in_the_way and keep_schema:
                    run.warn(f"release {chosen.id} goes back on the schema of {len(names)} later migration(s) "
                             f"({', '.join(names)}): --keep-schema")
                    run.record("rollback_schema", {"kept": True, "migrations": names})
                step.note(f"{current or '(none)'} -> {chosen.id}")
            # verify reads the cluster right after a plain go-live: the old containers drain meanwhile
            live_again = _going_live(run, settings, leader, runtime, current, chosen, verified_after=not restore)
            if in_the_way and unapply:
                with run.step("unapply") as step:
                    targets = migrations.unapply(run, leader, runtime, _compose_file(settings), names)
                    run.record("rollback_schema", {"unapplied": names, "to": [list(t) for t in targets]})
                    _mark_undone(leader, found, in_the_way, f"unapplied by `inv rollback --unapply` ({run.folder.name})")
                    step.note(f"unapplied {', '.join(names)} (back to {', '.join(f'{a} {t}' for a, t in targets)})")
            if in_the_way and restore:
                _restore_then(run, leader, runtime, cluster.leader.name, found, chosen, in_the_way, yes, ask, live_again)
                _mark_undone(leader, found, in_the_way, f"restored away by `inv rollback --restore` ({run.folder.name})")
            else:
                live_again()
            if current and current != chosen.id:
                sync.record_outcome(leader, current, "rolled-back")
        verify(run, settings, edges, cluster, runtime, inventory)


def _mark_undone(leader: Host, found: list[ReleaseInfo], in_the_way: list[tuple[str, list[str], str | None]],
                 how: str) -> None:
    """Each of those releases' migration records says a rollback took them back (``how``), so
    they no longer stand in a later rollback's way (releases.migrations_in_the_way)."""
    metas = {r.id: r.meta for r in found}
    for release_id, _, _ in in_the_way:
        record = metas[release_id].get("migrations") or {}
        sync.update_release_meta(leader, release_id, migrations={**record, "undone": how})


def _compose_file(settings: Settings) -> dict:
    return sync.read_compose(settings.stack_dir / "compose.yml")


def _require_lossless(run: Run, leader: Host, runtime: Runtime, settings: Settings, chosen: ReleaseInfo,
                      names: list[str], named: bool) -> None:
    """--unapply only where Django can take every migration back and none loses a row."""
    verdicts = migrations.reversal(run, leader, runtime, _compose_file(settings), names)
    again = f"inv rollback{f' --release {chosen.id}' if named else ''}"
    ways = f"`{again} --restore` puts the data back with the schema; `{again} --keep-schema` leaves the schema"
    if isinstance(verdicts, str):
        raise OperatorError(f"--unapply: whether {', '.join(names)} can be taken back is not known: {verdicts}; "
                            "nothing changed", ways)
    lossy = [v for v in verdicts if not v.lossless]
    if lossy:
        raise OperatorError("--unapply would lose data or cannot be done: " + "; ".join(
            f"{v.migration} {', '.join(v.loses)}" for v in lossy) + "; nothing changed", ways)
    run.log(f"Django can take back {', '.join(names)} without losing a row")


def _going_live(run: Run, settings: Settings, leader: Host, runtime: Runtime, current: str | None,
                chosen: ReleaseInfo, verified_after: bool) -> Callable[[], None]:
    def go() -> None:
        runtime.go_live(run, leader, Candidate(chosen.id, current, chosen.meta.get("images") or {},
                                               mount_changes(settings, leader, current, chosen),
                                               migrate=False, publish=False, together=True,
                                               verified_after=verified_after))
    return go


def _restore_then(run: Run, leader: Host, runtime: Runtime, name: str, found: list[ReleaseInfo], chosen: ReleaseInfo,
                  in_the_way: list[tuple[str, list[str], str | None]], yes: bool, ask, go_live: Callable[[], None]) -> None:
    """The database back to the backup taken before the first migration in the way, then the
    release live on it. What that loses is listed (the time span, and the rows written per
    table since the backup where the server's statistics tell) before the operator confirms."""
    first, _, label = in_the_way[0]
    names = [m for _, applied, _ in in_the_way for m in applied]
    if label is None:
        created = next((r.created for r in found if r.id == first), None) or "?"
        raise RestoreInputError(
            f"no backup was taken before the migrations of release {first} ({', '.join(names)}: deployed with "
            "--skip-backup), so --restore has nothing to go back to; nothing was changed",
            f"restore to a moment before that release migrated, `inv restore --to '<time before {created}>'` "
            "(`inv backups` shows the window), then `inv rollback --keep-schema`; or, if the migrations only add, "
            "`inv rollback --keep-schema` alone")
    record = (next(r for r in found if r.id == first).meta.get("migrations") or {})
    target = backup_flow.RestoreTarget(label=label)
    earlier = backup_flow.unfinished(run, leader)
    status = read_status(run, leader, runtime, stopped=earlier is not None)
    args = backup_flow.checked(status, target)
    lost = _what_is_lost(status, status.find(label), record.get("writes_at_backup"))
    run.record("rollback_schema", {"restored": label, "migrations": names, "lost": lost})
    for line in _loss_lines(label, lost):
        run.console.print(line, markup=False)
    confirm.typed_name(name, f"roll back to release {chosen.id} and put the database back to backup {label}, losing "
                             f"what was written since {lost['since']}", yes, ask=ask)
    if earlier is None:
        undo = take(run, leader, runtime, "full" if not status.backups else "diff", "before the rollback's restore").label
        backup_flow.stop_writers(run, leader, runtime)
    else:   # a rollback --restore cut short: the database is half restored; the first attempt's backup undoes it
        undo = str(earlier.get("undo") or "?")
    run.log(f"the database as it was is backup {undo}: `inv restore --backup {undo}` then `inv rollback --release "
            f"{releases.live(found)}` undo this rollback")
    backup_flow.restore_in_place(run, leader, runtime, releases.live(found) or chosen.id, args, target, undo,
                                 start=go_live)


def _what_is_lost(status: backups.BackupStatus, made: backups.BackupSet, writes_at_backup: Any) -> dict[str, Any]:
    """Everything committed after the backup ended: its span and, where the counters allow, the
    rows per table (inserted, updated, deleted)."""
    per_table = backups.written_since(writes_at_backup, status.writes)
    return {"since": made.stopped.isoformat(), "seconds": max(0, int((status.now - made.stopped).total_seconds())),
            "rows": None if per_table is None else {t: list(n) for t, n in sorted(per_table.items())}}


def _loss_lines(label: str, lost: dict[str, Any]) -> list[str]:
    since = datetime.fromisoformat(lost["since"])
    lines = [f"restoring backup {label} loses every write committed since it ended, {since:%Y-%m-%d %H:%M:%S} UTC "
             f"({backups.age(lost['seconds'])} ago):"]
    if lost["rows"] is None:
        lines.append("  rows per table: unknown (the database's statistics were reset since, or were not read)")
    elif not lost["rows"]:
        lines.append("  no row was written since")
    for table, (ins, upd, dele) in (lost["rows"] or {}).items():
        lines.append(f"  {table}: {ins} inserted, {upd} updated, {dele} deleted")
    return lines
