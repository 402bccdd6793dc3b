"""`inv exec`, `inv manage` and `inv shell`: a command in the stack's containers, attached to this
terminal (a remote terminal when stdin is one here), whose exit status becomes the task's.

    exec     a running container of the service (on the node that runs it, on a swarm)
    manage   Django's manage.py in a one-off container of the live release's image and env
    shell    manage.py shell, the same way

The run folder records who ran what where and its exit status; the command's output is on the
terminal only (it is the operator's own command, and an interactive session is not a log).
"""
from __future__ import annotations

import shlex
from typing import Sequence

from core.errors import EXIT_FAILED, OperatorError
from deploy.flows import live
from deploy.flows.live import UsageError
from deploy.report.run import Run
from deploy.settings import Settings
from deploy.wiring import REAL_EDGES, Edges
from remote import oneoff
from remote.host import Host


class CommandExit(OperatorError):
    """The remote command ended non-zero: the task ends with the same status."""

    outcome = "failed"


def exec_in(run: Run, settings: Settings, edges: Edges = REAL_EDGES, service: str = "", argv: Sequence[str] = (),
            tty: bool = False) -> int:
    live.require_services(settings, [service])
    if not argv:
        raise UsageError("no command given to run in the container",
                         f"write it after --, e.g. inv exec {service} -- python -c 'print(1)'")
    with live.reached(run, settings, edges) as (_cluster, runtime, inventory):
        leader = inventory.targets[0]
        replica = live.running_container(live.snapshot(run, runtime, leader), service, leader.name)
        host = live.node_host(inventory, replica.node, run)
        return _attached(run, host, oneoff.exec_in(replica.container, argv, tty), tty,
                         f"{shlex.join(argv)} in {replica.container}")


def manage(run: Run, settings: Settings, edges: Edges = REAL_EDGES, argv: Sequence[str] = (), tty: bool = False) -> int:
    if not argv:
        raise UsageError("no manage.py command given",
                         "write it after --, e.g. inv manage -- showmigrations (inv shell opens Django's shell)")
    service = live.django_service(settings)
    with live.reached(run, settings, edges) as (_cluster, runtime, inventory):
        leader = inventory.targets[0]
        if live.snapshot(run, runtime, leader).release is None:
            raise UsageError("nothing is live yet: there is no release to run manage.py in", "`inv deploy` first")
        command = runtime.one_off_command(leader, service, ["python", "manage.py", *argv], tty)
        return _attached(run, leader, command, tty, f"manage.py {shlex.join(argv)} in a one-off {service}")


def django_shell(run: Run, settings: Settings, edges: Edges = REAL_EDGES, tty: bool = False) -> int:
    return manage(run, settings, edges, argv=["shell"], tty=tty)


def _attached(run: Run, host: Host, command: str, tty: bool, what: str) -> int:
    run.record("command", {"node": host.name, "what": what, "tty": tty})
    with run.step("command") as step:
        status = host.interactive(command, what, pty=tty)
        step.note(f"{what} on {host.name}: exit {status}")
    run.record("exit_status", status)
    if status == 0:
        return 0
    if status is None or not 0 < status < 256:   # Fabric says -1 when the session gave no status
        raise CommandExit(f"{what} ended without an exit status (the session was cut)",
                          "check the droplet is up (`inv status`) and run it again", exit_code=EXIT_FAILED)
    raise CommandExit(f"{what} exited with status {status}", exit_code=status)
