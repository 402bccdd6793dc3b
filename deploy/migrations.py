"""A release's migration, once, before its services start, while the live release serves: the
same step on one droplet (a one-off of the release's compose project) and on a swarm (a
one-off container of the release's image on the stack's network); ``plan`` and ``apply`` are
the runtime's way of running it.

    migrate     skipped (first release, or the image is the live one's) | migrate --plan ->
                nothing to apply | backup (before_migrating) -> migrate -> recorded
                | migrate failed -> the migrations it committed unapplied -> the deploy stops
"""
from __future__ import annotations

from typing import Callable, TypeVar

from deploy import steps
from deploy.report.run import Run
from deploy.runtime.base import Candidate, Runtime
from remote import compose, migration_reversal, sync
from remote.backup import SERVICE as DATABASE
from remote.host import Host

T = TypeVar("T")
# (service, the release's migrate argv) -> what the runtime's one-off gives back
Runner = Callable[[str, list[str]], T]


def migrate(run: Run, target: Host, release: Candidate, compose_file: dict, plan: Runner[list[str]],
            apply: Runner[str]) -> None:
    """The release's migration, once, before the cutover, while the live release serves. A first
    release has no database yet: its own start migrates. Migrations ship in the image: when the
    migrating service's image is the one the live release runs, there is nothing new to apply
    (and no one-off container to pay for). Otherwise the release lists what it would apply
    (``migrate --plan``); with nothing, nothing more happens; else the backup that undoes it is
    taken first (``release.before_migrating``), and both are recorded in the release and run.json."""
    release_id, live = release.release_id, release.live
    found = compose.migration(compose_file)
    if found is None or not live:
        run.skip_step("migrate", "first release: the database is created by its first start" if found
                      else "the stack declares no x-release-migrate")
        return
    service, argv = found
    image = (release.images.get(service) or {}).get("id")
    live_image = (((sync.read_release_meta(target, live) or {}).get("images") or {}).get(service) or {}).get("id")
    if image and image == live_image:
        run.skip_step("migrate", f"{service}'s image is the live release's: no new migration")
        return
    with run.step("migrate") as step:
        try:
            with steps.interruptible(run, target, release_id, live):
                pending = plan(service, argv)
                if not pending:
                    run.record("migrations", {"applied": [], "backup": None})
                    step.note("no migration to apply")
                    return
                undo = release.before_migrating(pending) if release.before_migrating else {"backup": None}
                label = undo.get("backup")
                record = {"applied": pending, **undo}
                run.record("migrations", record)
                try:
                    output = apply(service, argv)
                except compose.ComposeError as exc:
                    exc.message = f"{exc.message}; {undo_partial(run, service, argv, pending, plan, apply, label)}"
                    raise
                sync.update_release_meta(target, release_id, migrations=record)
        except compose.ComposeError as exc:
            steps.keep_diagnostics(run, target, exc)
            sync.record_outcome(target, release_id, "failed")
            exc.message = f"{exc.message}; still serving release {live}"
            raise
        run.artifacts.write_text(f"{target.artifact_prefix}migrate.txt", output)
        step.note(f"applied {', '.join(pending)}" + (f" after backup {label}" if label else " (no backup taken)"))


def undo_partial(run: Run, service: str, argv: list[str], pending: list[str], plan: Runner[list[str]],
                 apply: Runner[str], backup: str | None) -> str:
    """After a migration run that failed: the migrations it applied before the failing one
    (Django commits each on its own) unapplied, so the database is as the live release left it.
    Returns what the operator is told; never raises (the failure is the news)."""
    way_back = (f"`inv restore --backup {backup}` puts the database back as it was before" if backup
                else "no backup was taken before it (--skip-backup)")
    try:
        still = plan(service, argv)
        applied_now = [m for m in pending if m not in still]
        if not applied_now:
            run.record("migrations_undone", [])
            return "none of the release's migrations is applied (the failing one was rolled back): the database is as before"
        targets = compose.undo_targets(applied_now, apply(service, compose.showmigrations_argv(argv)))
        for app, to in targets:
            apply(service, compose.unapply_argv(argv, app, to))
        left = [m for m in pending if m not in plan(service, argv)]
    except (compose.ComposeError, ValueError) as exc:
        reason = getattr(exc, "reason", str(exc))
        run.record("migrations_undone", None)
        return f"the migrations applied before the failure could not be undone ({reason}): {way_back}"
    if left:
        run.record("migrations_undone", None)
        return f"{', '.join(left)} stayed applied after unapplying: {way_back}"
    run.record("migrations_undone", applied_now)
    return (f"{', '.join(applied_now)}, applied before the failure, unapplied (back to "
            + ", ".join(f"{app} {to}" for app, to in targets) + "): the database is as before")


# -- taking a rollback's migrations back (inv rollback --unapply) -------------------------------------

def reversal(run: Run, leader: Host, runtime: Runtime, compose_file: dict,
             names: list[str]) -> list[migration_reversal.Verdict] | str:
    """Whether the live release can take ``names`` back without losing a row (read-only, in a
    one-off of its migrating service); the reason instead when it cannot be told."""
    found = compose.migration(compose_file)
    if found is None:
        return "the stack declares no x-release-migrate"
    service, argv = found
    check = migration_reversal.argv(argv, names)
    res = leader.run(runtime.one_off_command(leader, service, check, tty=False, beside=DATABASE),
                     "asking Django whether the migrations can be taken back", check=False, timeout=300)
    try:
        if not res.ok:
            raise ValueError(res.tail())
        return migration_reversal.parse(res.stdout, names)
    except ValueError as exc:
        run.artifacts.write_text(f"{leader.artifact_prefix}migration-reversal.txt", res.output)
        return f"the check failed ({exc}; migration-reversal.txt in the run folder)"


def unapply(run: Run, leader: Host, runtime: Runtime, compose_file: dict, names: list[str]) -> list[tuple[str, str]]:
    """``names`` unapplied by the live release (``migrate APP TARGET`` per app, last app first);
    returns the (app, target) pairs. ComposeError when Django refuses one: each ``migrate`` is
    atomic on PostgreSQL, so what it was taking back stays applied."""
    service, argv = compose.migration(compose_file) or ("", [])

    def one_off(args: list[str], what: str) -> str:
        return compose.read_migration(leader.run(runtime.one_off_command(leader, service, args, tty=False, beside=DATABASE), what,
                                                 check=False, timeout=600), service, args)

    try:
        targets = compose.undo_targets(names, one_off(compose.showmigrations_argv(argv), "listing the migrations"))
    except ValueError as exc:
        raise compose.ComposeError(service, f"the live release does not list {', '.join(names)} ({exc})", {},
                                   hint="`inv manage showmigrations` shows what it has") from None
    for app, to in targets:
        run.artifacts.write_text(f"{leader.artifact_prefix}unapply-{app}.txt",
                                 one_off(compose.unapply_argv(argv, app, to), f"unapplying {app}'s migrations to {to}"))
    return targets
