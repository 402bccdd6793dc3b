"""The services' logs, printed on the leader: the command (with timestamps, following them on
request) and the parser of its lines. Compose prints ``api-1  | <time> <text>``; `docker service
logs` prints the task and its node, ``stackdeploy_api.1@node-2    | <text>``, with the time before
it (the parser takes the time on either side). Pure: builders return strings."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from remote import commands as cmd


@dataclass(frozen=True)
class LogRequest:
    services: tuple[str, ...]        # each service named (the flow fills in all of them when none is)
    follow: bool = False
    since: str | None = None         # docker's --since: 10m, 2h, an RFC 3339 time
    tail: int | None = None          # lines per container (None: all)


@dataclass(frozen=True)
class LogLine:
    service: str
    node: str                        # the droplet (a swarm's task); "" on Compose
    time: str                        # RFC 3339 with nanoseconds padded (docker pads them): sorts as text
    text: str


def _options(request: LogRequest) -> list[str]:
    args = ["--timestamps"]
    if request.since:
        args += ["--since", request.since]
    if request.tail is not None:
        args += ["--tail", str(int(request.tail))]
    if request.follow:
        args.append("--follow")
    return args


def compose_command(t: cmd.ComposeProject, request: LogRequest) -> str:
    """One `compose logs` for every service asked: Compose merges their lines as they come."""
    return cmd.compose(t.project, t.compose_files, t.env_file, "logs", "--no-color", *_options(request),
                       *request.services, project_directory=t.project_directory)


def swarm_command(stack: str, request: LogRequest) -> str:
    """`docker service logs` takes one service and brings its tasks' lines from every node; several
    run side by side in one shell (a line is written whole, so lines never mix)."""
    each = [cmd.join(["docker", "service", "logs", "--no-task-ids", *_options(request), f"{stack}_{service}"])
            for service in request.services]
    return each[0] if len(each) == 1 else " & ".join(each) + " & wait"


_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)"
_SWARM = re.compile(rf"^(?:(?P<time1>{_TIME})\s+)?(?P<task>[^\s@|]+)@(?P<node>[^\s|]+)\s+\|\s?"
                    rf"(?:(?P<time2>{_TIME})\s?)?(?P<text>.*)$")
_COMPOSE = re.compile(rf"^(?P<source>[^\s|]+)\s+\|\s?(?P<time>{_TIME})\s?(?P<text>.*)$")


def parse_line(line: str, project: str, services: Sequence[str]) -> LogLine | None:
    """A line of either command; None for anything else (docker's own error messages)."""
    swarm = _SWARM.match(line)
    if swarm is not None:
        task = swarm.group("task").removeprefix(project + "_")
        return LogLine(service=re.sub(r"\.\d+(\.\w+)?$", "", task), node=swarm.group("node"),
                       time=swarm.group("time1") or swarm.group("time2") or "", text=swarm.group("text"))
    found = _COMPOSE.match(line)
    if found is None:
        return None
    source = found.group("source")
    bare = re.sub(r"-\d+$", "", source)       # api-1 -> api; older Compose: stackdeploy-api-1
    service = next((c for c in (source, bare, bare.removeprefix(project + "-")) if c in services), bare)
    return LogLine(service=service, node="", time=found.group("time"), text=found.group("text"))
