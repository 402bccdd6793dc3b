"""A command in the stack's containers: in a running one (`inv exec`), or in a one-off container
of a service's live image and env, removed afterwards (`inv manage`, `inv shell`). Pure builders.

``tty``: the operator's stdin is a terminal, so the command gets one (an interactive shell);
otherwise stdin is still passed on (`echo ... | inv exec api -- python`) and output stays plain.
"""
from __future__ import annotations

from typing import Sequence

from remote import commands as cmd


def exec_in(container: str, argv: Sequence[str], tty: bool) -> str:
    return cmd.join(["docker", "exec", "-it" if tty else "-i", container, *argv])


def compose_one_off(t: cmd.ComposeProject, service: str, argv: Sequence[str], tty: bool) -> str:
    """`compose run` of the live release: the service's image, env and networks, no dependency
    started (they run already), removed when it ends."""
    return cmd.compose(t.project, t.compose_files, t.env_file, "run", "--rm", "--no-deps",
                       *([] if tty else ["-T"]), service, *argv, project_directory=t.project_directory)


# The Swarm service's task spec gives the image and env the live release runs with; the env goes
# through a file only the deploy user can read, removed on exit, never onto a command line
# (where `ps` would show its secrets). The stack's networks are attachable (remote/stackfile.py).
_SWARM_ONE_OFF = (
    "set -e; svc={svc}; "
    "image={image}; "
    "network={network}; "
    "env=$(mktemp); trap 'rm -f \"$env\"' EXIT; "
    "docker service inspect --format '{{{{range .Spec.TaskTemplate.ContainerSpec.Env}}}}{{{{println .}}}}"
    "{{{{end}}}}' \"$svc\" > \"$env\"; "
    "set +e; docker run --rm {flags} --network \"$network\" --env-file \"$env\" \"$image\" {argv}")


_LIVE_IMAGE = "$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' \"$svc\")"
_NETWORKS = "docker service inspect --format '{{range .Spec.TaskTemplate.Networks}}{{.Target}} {{end}}'"
_FIRST_NETWORK = f"$({_NETWORKS} \"$svc\" | cut -d' ' -f1)"
# The first of the service's networks that ``{other}`` is on too (the database's, for a migration).
_ESCAPED = _NETWORKS.replace("{", "{{").replace("}", "}}")   # formatted once more below
_SHARED_NETWORK = (f"$(for n in $({_ESCAPED} \"$svc\"); do {_ESCAPED} {{other}} | tr ' ' '\\n' "
                   f"| grep -qx \"$n\" && {{{{ echo \"$n\"; break; }}}}; done)")


def swarm_one_off(stack: str, service: str, argv: Sequence[str], tty: bool, image: str | None = None,
                  beside: str | None = None) -> str:
    """`docker run` on the leader of the live service's image (or ``image``: a release's, not
    deployed yet) with the live service's env, on its first network (or the first it shares
    with the service ``beside``)."""
    network = _SHARED_NETWORK.format(other=cmd.q(f"{stack}_{beside}")) if beside else _FIRST_NETWORK
    return _SWARM_ONE_OFF.format(svc=cmd.q(f"{stack}_{service}"), image=cmd.q(image) if image else _LIVE_IMAGE,
                                 network=network, flags="-it" if tty else "-i", argv=cmd.join(argv))


def swarm_service_exists(stack: str, service: str) -> str:
    """Exit 0 when the stack runs ``service`` (a swarm's first release does not yet)."""
    return f"docker service inspect {cmd.q(f'{stack}_{service}')} >/dev/null 2>&1"
