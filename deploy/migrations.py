"""A release's migration, once, before its services start, while the live release serves: the
same step on one droplet (a one-off of the release's compose project) and on a swarm (a
one-off container of the release's image on the stack's network); ``plan`` and ``apply`` are
the runtime's way of running it.

    migrate     skipped (first release, or the image is the live one's) | migrate --plan ->
                nothing to apply | backup (before_migrating) -> migrate -> recorded
"""
from __future__ import annotations

from typing import Callable, TypeVar

from deploy import steps
from deploy.report.run import Run
from deploy.runtime.base import Candidate
from remote import compose, sync
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
                output = apply(service, argv)
                sync.update_release_meta(target, release_id, migrations=record)
        except compose.ComposeError as exc:
            steps.keep_diagnostics(run, target, exc)
            sync.record_outcome(target, release_id, "failed")
            exc.message = f"{exc.message}; still serving release {live}"
            raise
        run.artifacts.write_text(f"{target.artifact_prefix}migrate.txt", output)
        step.note(f"applied {', '.join(pending)}" + (f" after backup {label}" if label else " (no backup taken)"))
