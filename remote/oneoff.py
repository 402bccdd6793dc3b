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
    "image=$(docker service inspect --format '{{{{.Spec.TaskTemplate.ContainerSpec.Image}}}}' \"$svc\"); "
    "network=$(docker service inspect --format '{{{{range .Spec.TaskTemplate.Networks}}}}{{{{.Target}}}} "
    "{{{{end}}}}' \"$svc\" | cut -d' ' -f1); "
    "env=$(mktemp); trap 'rm -f \"$env\"' EXIT; "
    "docker service inspect --format '{{{{range .Spec.TaskTemplate.ContainerSpec.Env}}}}{{{{println .}}}}"
    "{{{{end}}}}' \"$svc\" > \"$env\"; "
    "set +e; docker run --rm {flags} --network \"$network\" --env-file \"$env\" \"$image\" {argv}")


def swarm_one_off(stack: str, service: str, argv: Sequence[str], tty: bool) -> str:
    """`docker run` on the leader of the live service's image and env, on its network."""
    return _SWARM_ONE_OFF.format(svc=cmd.q(f"{stack}_{service}"), flags="-it" if tty else "-i", argv=cmd.join(argv))
