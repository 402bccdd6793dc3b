"""Commands for the database's backups (pure: they only return strings).

pgBackRest runs inside the postgres service's image through its `pgbr` wrapper, which takes
the repository's settings (and secrets) from the container's environment: no secret is ever
part of these commands. A restore runs in a one-off container of the postgres service on its
data volume while the server is stopped."""
from __future__ import annotations

from collections.abc import Sequence

from remote.commands import ComposeProject, _c, join, q

SERVICE = "postgres"
# in_database's exit status when no PostgreSQL container runs on the node.
NO_CONTAINER = 64


def in_database(filters: Sequence[str], argv: Sequence[str]) -> str:
    """``argv`` in the running PostgreSQL container that ``filters`` (docker ps) find: the same
    command for a Compose project and a Swarm task."""
    found = " ".join(f"--filter {q(f)}" for f in filters)
    return (f'c=$(docker ps -q {found} | head -n 1); '
            f'if [ -z "$c" ]; then echo "no running {SERVICE} container" >&2; exit {NO_CONTAINER}; fi; '
            f'docker exec -i "$c" {join(argv)}')


def status(filters: Sequence[str]) -> str:
    """backup-status.sh's JSON document (backups, WAL range, archiver, schedule)."""
    return in_database(filters, ["backup-status"])


def backup(filters: Sequence[str], kind: str) -> str:
    """An on-demand backup of ``kind`` (full, diff or incr), pgBackRest's progress on stdout."""
    if kind not in ("full", "diff", "incr"):
        raise ValueError(f"unknown backup type {kind!r}")
    return in_database(filters, ["pgbr", "--log-level-console=info", f"--type={kind}", "backup"])


def archive_now(filters: Sequence[str]) -> str:
    """Switch to a new WAL segment and wait until the last one is in the repository: every
    transaction committed so far can then be restored."""
    return in_database(filters, ["pgbr", "--log-level-console=warn", "check"])


def restore_args(target_time: str | None = None, label: str | None = None, base: str | None = None) -> list[str]:
    """pgBackRest's restore options: to a point in time (``target_time``, exclusive, so a
    transaction committed at that instant is not replayed), to the end of one backup
    (``label``: consistent, no WAL beyond it), or to the end of the archived WAL (neither).
    ``base``: the backup a time or end-of-WAL restore starts from (one on the live timeline's
    history: pgBackRest would pick the newest, which may sit on a timeline a restore abandoned).

    ``--delta`` rewrites only what differs, so a restore interrupted halfway is finished by
    running it again. The server promotes itself once the target is reached."""
    args = ["--log-level-console=info", "--delta"]
    if target_time and label:
        raise ValueError("a restore goes to a point in time or to a backup, not both")
    if base and not label:
        args.append(f"--set={base}")
    if target_time:
        args += ["--type=time", f"--target={target_time}", "--target-exclusive", "--target-action=promote"]
    elif label:
        args += [f"--set={label}", "--type=immediate", "--target-action=promote"]
    return [*args, "restore"]


# -- on a swarm: the postgres service's task runs on node 1 (the data node) -------------------------

def swarm_stop(stack: str, services: Sequence[str], timeout_s: int = 300) -> str:
    """The services scaled to no task at once (-d: the CLI would wait for each in turn), then
    waiting until no task of theirs runs on any node; exit 1 past ``timeout_s``. The next
    `docker stack deploy` of the release gives them their replicas back."""
    names = [f"{stack}_{s}" for s in services]
    scale = join(["docker", "service", "scale", "-d", *(f"{n}=0" for n in names)])
    tasks = join(["docker", "service", "ps", "--format", "{{.CurrentState}}", *names])
    return (f"{scale} >/dev/null && for _ in $(seq 1 {timeout_s}); do "
            f"{tasks} | grep -qE '^(New|Allocated|Pending|Assigned|Accepted|Preparing|Ready|Starting|Running)' "
            f"|| exit 0; sleep 1; done; echo 'tasks of {' '.join(names)} still run after {timeout_s} s' >&2; exit 1")


# The postgres service's own image, env, user and mounts (its data volume, the test CA) from its
# task spec: the service is scaled to no task, so the one-off container is the only user of the
# volume. The env (the repository's secrets) goes through a file only the deploy user reads,
# removed on exit, never onto a command line. Node 1 holds the volume: this runs there.
_SWARM_DB_ONE_OFF = (
    "set -e; svc={svc}; "
    "spec() {{ docker service inspect --format \"$1\" \"$svc\"; }}; "
    "image=$(spec '{{{{.Spec.TaskTemplate.ContainerSpec.Image}}}}'); "
    "user=$(spec '{{{{.Spec.TaskTemplate.ContainerSpec.User}}}}'); "
    "mounts=$(spec '{{{{range .Spec.TaskTemplate.ContainerSpec.Mounts}}}}--mount=type={{{{.Type}}}}"
    "{{{{if .Source}}}},source={{{{.Source}}}}{{{{end}}}},target={{{{.Target}}}}{{{{if .ReadOnly}}}},readonly{{{{end}}}} "
    "{{{{end}}}}'); "
    "env=$(mktemp); trap 'rm -f \"$env\"' EXIT; "
    "spec '{{{{range .Spec.TaskTemplate.ContainerSpec.Env}}}}{{{{println .}}}}{{{{end}}}}' > \"$env\"; "
    "set +e; docker run --rm -i ${{user:+--user \"$user\"}} $mounts --env-file \"$env\" --entrypoint {entry} "
    "\"$image\" {argv}")


def swarm_one_off(stack: str, entrypoint: str, argv: Sequence[str] = ()) -> str:
    """``entrypoint argv`` in a one-off container of the stack's postgres service, on its data
    volume (the service's task must be stopped for a restore)."""
    return _SWARM_DB_ONE_OFF.format(svc=q(f"{stack}_{SERVICE}"), entry=q(entrypoint), argv=join(argv))


def compose_one_off(t: ComposeProject, entrypoint: str, argv: Sequence[str] = ()) -> str:
    """``entrypoint argv`` in a one-off container of the Compose project's postgres service."""
    return _c(t, "run", "--rm", "--no-deps", "-T", "--entrypoint", entrypoint, SERVICE, *argv)
