"""The runtime interface and the release it takes live."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from deploy.report.run import Run
from deploy.wiring import Inventory
from remote.host import Host
from remote.logs import LogRequest
from remote.status import Snapshot


@dataclass(frozen=True)
class Candidate:
    """A release whose files and images are on the leader, about to go live."""

    release_id: str
    live: str | None                         # the release serving now: the way back on a failure
    images: dict[str, dict[str, str]]        # service -> {"ref", "id"}: what must run
    recreate: frozenset[str] = field(default_factory=frozenset)   # bind-mounted files changed (Compose)
    migrate: bool = True                     # run the release's migration first (not for a rollback)
    publish: bool = True                     # push its images and write its stack file (Swarm)
    # Called with the migrations about to be applied, before any is: takes the backup that
    # undoes them and returns what the release records of it (its label: None with
    # --skip-backup); raising stops the deploy.
    before_migrating: Callable[[list[str]], dict[str, Any]] | None = None
    # A return to services that ran side by side before (a rollback): every replacement starts
    # at once instead of after the new containers of what it depends on (Compose).
    together: bool = False
    # The database passwords change with this release: its migration runs with the live
    # release's env, as the new login gets its password only as the cutover begins.
    migrate_with_live_env: bool = False
    # The flow reads the cluster right after (verify): the old containers may drain meanwhile,
    # awaited by Runtime.inspect, instead of before the go-live returns (Compose).
    verified_after: bool = False


class Runtime(Protocol):
    name: str

    def prepare(self, run: Run, inventory: Inventory) -> None:
        """Under the deploy lock, before anything ships: the cluster can run a release."""

    def go_live(self, run: Run, leader: Host, release: Candidate) -> None:
        """Switch `current` to the release and start it with zero downtime; on failure the
        previous release serves again and the error says so."""

    def restart(self, run: Run, leader: Host, release_id: str, images: dict[str, dict[str, str]]) -> None:
        """Start the live release again as it is (after a reboot, a container removed by hand)."""

    def can_return_to(self, leader: Host, release_id: str, images: dict[str, dict[str, str]]) -> str | None:
        """Why the release cannot start again without a build (None: it can)."""

    def retire(self, run: Run, leader: Host) -> None:
        """The nodes beyond the count asked for (the cluster's surplus) leave it without a gap,
        then their droplets are deleted."""

    def inspect(self, run: Run, inventory: Inventory) -> list[str]:
        """Collect the cluster's state into the run folder; what is not serving as it should."""

    def database(self) -> tuple[str, ...]:
        """`docker ps` filters that find the running PostgreSQL container on the leader (the
        node that holds the data)."""

    def service_filters(self, service: str) -> tuple[str, ...]:
        """`docker ps` filters that find a running container of ``service`` on the leader (for
        PostgreSQL and Redis, which run there alone)."""

    # -- the day-2 tasks: what runs now, its logs, a command in it -----------------------------------

    def snapshot(self, leader: Host) -> Snapshot:
        """What runs now, read from the leader in one command (remote/status.py): the live
        release, each service's containers or tasks (with the node each runs on), free disk."""

    def logs_command(self, leader: Host, request: LogRequest) -> str:
        """The one command on the leader that prints the services' logs with timestamps (from
        every node on a swarm), following them with ``request.follow``."""

    def one_off_command(self, leader: Host, service: str, argv: Sequence[str], tty: bool,
                        beside: str | None = None) -> str:
        """A one-off container of ``service``'s live image and env running ``argv`` on the leader,
        removed when it ends (`inv manage`); ``beside``: on a network it shares with that service
        (the database's, for a migration)."""

    def stop_command(self, leader: Host, services: Sequence[str]) -> str:
        """Stop ``services`` until the release is started again (`restart`), waiting until
        their containers have stopped; their data stays."""

    def database_one_off(self, leader: Host, entrypoint: str, argv: Sequence[str] = (),
                         release_id: str | None = None) -> str:
        """``entrypoint argv`` in a one-off container of the postgres service (its image, env
        and data volume) on the leader; ``release_id``: that release's, not the live one's."""

    down_hint: str

