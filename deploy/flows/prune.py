"""`inv prune [--dry-run]`: on demand, the pruning each healthy release already ends with.

    find -> connect every node -> the deploy lock on node 1 (not for --dry-run: it only reads)
    -> prune: old releases on node 1; on every node their images, dangling images, old build cache

The live release and the rollback targets (RELEASES_KEEP) stay with their images; no volume is
ever named. --dry-run lists the same and removes nothing.
"""
from __future__ import annotations

from contextlib import nullcontext

from deploy import steps
from deploy.flows import reach
from deploy.report.run import Run
from deploy.settings import Settings
from deploy.wiring import REAL_EDGES, Edges


def prune(run: Run, settings: Settings, edges: Edges = REAL_EDGES, dry_run: bool = False) -> None:
    cluster = reach.find(run, settings, edges, exact=False)
    with reach.connected(run, settings, edges, cluster.nodes) as inventory:
        leader = inventory.targets[0]
        held = nullcontext() if dry_run else steps.locked(run, leader, "(prune)", settings.lock_wait)
        with held, run.step("prune") as step:
            gone, plans = steps.prune(run, inventory.targets, settings.releases_keep, dry_run=dry_run)
            step.note(("would remove " if dry_run else "removed ")
                      + f"{len(gone.releases)} release(s), {sum(len(p.images) for p in plans)} image tag(s), "
                      f"{sum(len(p.dangling) for p in plans)} dangling image(s) and old build cache on "
                      f"{len(plans)} node(s)")
    stays = (f"the live release {gone.live or '(none)'} and the rollback targets "
             f"{', '.join(r for r in gone.staying if r != gone.live) or '(none)'}, with their images; every volume")
    run.record("prune", {"dry_run": dry_run, "nodes": plans, "stays": stays})
    listing = [f"{p.node}: {line}" for p in plans for line in steps.prune_lines(p)]
    run.artifacts.write_text("prune.txt", ("would remove (dry run, nothing removed):\n" if dry_run else "removed:\n")
                             + "".join(f"  {line}\n" for line in listing) + f"stays: {stays}\n")
    run.log(f"stays: {stays}")
    if dry_run:
        run.log("dry run: nothing was removed; `inv prune` removes it")
