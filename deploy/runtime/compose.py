"""One droplet: the release runs under Docker Compose, replaced service by service with zero
downtime (remote/compose.py's cutover), and a failed start puts the previous release back."""
from __future__ import annotations

from contextlib import AbstractContextManager

from deploy import steps, wiring
from deploy.report.run import Run
from deploy.runtime.base import Candidate
from deploy.settings import Settings
from deploy.wiring import Inventory
from remote import images, progress, sync
from remote.host import Host


class ComposeRuntime:
    name = "compose"
    down_hint = "`inv up` starts the live release's stopped services again (their logs are in remote/ in the run folder)"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = wiring.compose_spec(settings)
        self.compose_file = sync.read_compose(settings.stack_dir / "compose.yml")

    def prepare(self, run: Run, inventory: Inventory) -> None:
        """Nothing to form: Docker Compose on one droplet needs only Docker."""

    def go_live(self, run: Run, leader: Host, release: Candidate) -> None:
        if release.migrate:
            steps.migrate(run, leader, self.spec, release.release_id, release.live, self.compose_file)
        steps.switch(run, leader, release.release_id)
        recreate = set(release.recreate)
        with self._watched_up(run, leader):
            steps.up(run, leader, self.spec, release.release_id, release.images, recreate,
                     fallback=release.live, fallback_recreate=recreate)

    def restart(self, run: Run, leader: Host, release_id: str, images_: dict[str, dict[str, str]]) -> None:
        with self._watched_up(run, leader):
            steps.up(run, leader, self.spec, release_id, images_)

    def can_return_to(self, leader: Host, release_id: str, images_: dict[str, dict[str, str]]) -> str | None:
        present = images.lookup(leader, [e["ref"] for e in images_.values()])
        missing = sorted(ref for ref, image_id in present.items() if image_id == images.MISSING)
        return f"its images {', '.join(missing)} are gone from the droplet" if missing else None

    def retire(self, run: Run, leader: Host) -> None:
        """One droplet has no surplus: a cluster of one is never shrunk (deploy/cluster.py refuses 3 -> 1)."""

    def inspect(self, run: Run, inventory: Inventory) -> list[str]:
        down: list[str] = []
        for target in inventory:
            if target.connected:
                collected = steps.collect(run, target, wiring.collect_spec(self.settings))
                prefix = f"{target.name}: " if len(inventory) > 1 else ""
                down += [prefix + s for s in steps.not_serving(collected.services)]
        return down

    def _watched_up(self, run: Run, target: Host) -> AbstractContextManager[None]:
        """Live progress of the up step: each recreated service's state (created, starting,
        healthy) while compose starts the stack in one blocking command."""
        return run.watching("up", progress.ServiceStates(target, self.spec))
