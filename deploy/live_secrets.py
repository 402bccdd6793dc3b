"""What a release changes in the running servers, applied around its go-live: the server
passwords in PostgreSQL and Redis (remote/stack_secrets.py has the two halves) and Traefik's
live routes and users (remote/edge_config.py), so a rotation restarts none of them and refuses
no connection (docs/secrets.md has the whole story)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from core.errors import OperatorError
from deploy.report.run import Run
from remote import edge_config, stack_secrets
from remote.host import Host

Filters = Callable[[str], Sequence[str]]   # service -> `docker ps` filters of its container on the leader


@contextmanager
def applied(run: Run, leader: Host, live: str | None, target: str, filters: Filters) -> Iterator[bool]:
    """Before the body: the new passwords accepted beside the old ones. After it: the old ones
    retired. If the body raises (the live release serves again): the live release's passwords
    alone, as before. Traefik's routes and users are the target's before the body, the live
    release's again if it raises. Yields whether passwords change (then the old containers
    must be gone before the body ends: their new connections would be refused)."""
    publish_edge(run, leader, target)
    try:
        with _passwords(run, leader, live, target, filters) as changing:
            yield changing
    except BaseException:
        if live and live != target:
            try:
                publish_edge(run, leader, live)
            except (OperatorError, ConnectionError) as exc:
                run.warn(f"putting the live release's Traefik routes and users back failed "
                         f"({getattr(exc, 'message', exc)}): the next deploy or `inv up` writes them")
        raise


def publish_edge(run: Run, leader: Host, release_id: str) -> None:
    """Traefik's routes and users from ``release_id`` (a no-op when they are already live)."""
    layout = leader.layout
    res = leader.run(edge_config.publish(layout.base, layout.release(release_id)),
                     "Traefik: the release's routes and users", timeout=30)
    replaced = res.stdout.split()
    if replaced:
        run.record("edge_config", {"release": release_id, "replaced": replaced})
        run.log(f"Traefik reloads {' and '.join(replaced)} from {edge_config.folder(layout.base)} (no restart)")


@contextmanager
def _passwords(run: Run, leader: Host, live: str | None, target: str, filters: Filters) -> Iterator[bool]:
    changed = _changed(leader, live, target)
    if not changed:
        yield False
        return
    layout = leader.layout
    live_dir, target_dir = layout.release(live or ""), layout.release(target)
    pg, redis = stack_secrets.POSTGRES_FILE in changed, stack_secrets.REDIS_FILE in changed
    try:
        _accept_both(run, leader, live_dir, target_dir, pg, redis, filters)
        yield True
    except BaseException:
        # Also when the first half stopped part-way: what it added is taken back.
        _retire(run, leader, live_dir, pg, redis, filters, "putting the live release's passwords back")
        raise
    _retire(run, leader, target_dir, pg, redis, filters, "retiring the old passwords")


def _accept_both(run: Run, leader: Host, live_dir: str, target_dir: str, pg: bool, redis: bool,
                 filters: Filters) -> None:
    with run.step("secrets") as step:
        if pg:
            leader.run(stack_secrets.postgres(filters("postgres"), f"{target_dir}/{stack_secrets.POSTGRES_FILE}",
                                              keep_other=True),
                       "PostgreSQL: the new passwords beside the old login's", timeout=60)
        if redis:
            leader.run(stack_secrets.redis_add(filters("redis"), f"{live_dir}/{stack_secrets.REDIS_FILE}",
                                               f"{target_dir}/{stack_secrets.REDIS_FILE}"),
                       "Redis: the new password beside the old one", timeout=60)
        run.record("secrets_live", {"postgres": pg, "redis": redis})
        step.note("the running " + " and ".join(n for n, on in (("PostgreSQL", pg), ("Redis", redis)) if on)
                  + " accept the new passwords and the old ones until the cutover ends")


def _changed(leader: Host, live: str | None, target: str) -> list[str]:
    if not live or live == target:
        return []
    layout = leader.layout
    res = leader.run(stack_secrets.changed(layout.release(live), layout.release(target)),
                     "comparing the servers' passwords", timeout=30)
    return res.stdout.split()


def _retire(run: Run, leader: Host, keep_dir: str, pg: bool, redis: bool, filters: Filters, what: str) -> None:
    """The passwords in ``keep_dir`` alone. A failure is said, not raised: the release that serves
    works either way, and the other passwords still work until the next rotation or restart."""
    try:
        if pg:
            leader.run(stack_secrets.postgres(filters("postgres"), f"{keep_dir}/{stack_secrets.POSTGRES_FILE}",
                                              keep_other=False), f"PostgreSQL: {what}", timeout=60)
        if redis:
            file = f"{keep_dir}/{stack_secrets.REDIS_FILE}"
            leader.run(stack_secrets.redis_only(filters("redis"), file, file), f"Redis: {what}", timeout=60)
    except (OperatorError, ConnectionError) as exc:
        run.record("secrets_not_retired", True)
        run.warn(f"{what} failed ({getattr(exc, 'message', exc)}): the passwords of both releases still work "
                 "until PostgreSQL and Redis next start, when they take the live release's alone (on the "
                 "droplet: `docker restart` of their containers)")
