"""Stand-ins for the three edges of a run (DigitalOcean, SSH to a droplet with Docker, HTTP checks)
so every flow runs in milliseconds without Docker, sshd or a network.

The droplet is half real: file commands (mkdir, cp -al, tar, ln, mv, the lock's mkdir) run in a
local shell against a folder of this machine, so the release layout on "the droplet" is a real
tree the tests can look at. Only `docker ...` and `curl ...` are answered by FakeDocker, an
in-memory engine that builds, starts and reports services from the compose file in `current`.
A command that runs docker inside a shell script (a pipe into `xargs docker`, a `$(docker ...)`,
several docker commands in a row) runs in the local shell for real, with a `docker` on its PATH
that asks the droplet's FakeDocker over a socket (DockerStub).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import re
import select
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Callable
from unittest import mock

import yaml

from deploy import checks, cloud
from deploy.checks import dns as dns_check
from deploy.checks.context import Context
from deploy.checks.model import CheckResult, ChecksReport
from deploy.tls import CertificateInfo
from remote.connection import SshError
from remote import backup as backup_cmd
from remote import migration_reversal
from remote.host import Result, SshExecutor

from tests.flows.fake_backups import FakeDatabase, exec_argv

_ids = itertools.count(1)
_last_stamp = [0]


def stamp() -> str:
    """Now as docker prints it with --timestamps (RFC 3339, nanoseconds padded), never twice the same."""
    ns = max(time.time_ns(), _last_stamp[0] + 1)
    _last_stamp[0] = ns
    return datetime.fromtimestamp(ns // 10**9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"


@dataclass
class Container:
    id: str
    service: str
    image: str
    health: str = "healthy"
    state: str = "running"
    config_hash: str = ""
    final_health: str = ""    # slow_start: the health a "starting" container will have
    started: str = field(default_factory=stamp)
    restarts: int = 0
    exit_code: int = 0


@dataclass
class FakeDocker:
    """What a droplet's Docker engine would answer, kept in memory."""

    fail_build: set[str] = field(default_factory=set)     # services whose image build fails
    unhealthy: set[str] = field(default_factory=set)      # services whose next built image never gets healthy
    sick_images: set[str] = field(default_factory=set)
    images: dict[str, str] = field(default_factory=dict)  # image ref -> image id
    containers: dict[str, Container] = field(default_factory=dict)   # service -> its container
    extra: dict[str, Container] = field(default_factory=dict)        # id -> a second container (start-first)
    calls: list[list[str]] = field(default_factory=list)  # every docker/compose argv, in order
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (start|stop, service, container id)
    migrations: list[list[str]] = field(default_factory=list)          # one-off `compose run` argv
    interrupt_at: str | None = None    # "build" or "scale <service>": the operator presses Ctrl-C there, once
    build_output: tuple[int, str] | None = None   # (exit, stderr) every `compose build` ends with (e.g. disk full)
    # Named volumes (the data: PostgreSQL, Redis, ACME) created by `up`, and every command that
    # would delete one: a deploy must never send such a command, whatever fault it meets.
    volumes: set[str] = field(default_factory=set)
    volume_removals: list[list[str]] = field(default_factory=list)
    database: FakeDatabase = field(default_factory=FakeDatabase)   # pgBackRest in the postgres container
    # What each service printed: service -> [(docker's timestamp, line)]; a container's start prints one.
    service_logs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # `docker exec` into a container, a `compose run` (but the migration) and a `docker run` one-off:
    # their argv, and what answers them: (exit status, output) for the command after the image/container.
    ran: list[list[str]] = field(default_factory=list)
    answer: Callable[[list[str]], tuple[int, str]] = field(default=lambda argv: (0, f"ran {' '.join(argv)}\n"))
    project: str = "stackdeploy"

    def log(self, service: str, line: str) -> None:
        """``service`` prints ``line`` now."""
        self.service_logs.setdefault(service, []).append((stamp(), line))

    def _start(self, name: str, definition: dict, image: str) -> Container:
        # distinct in their first 12 characters, the short id `compose ps` shows (as docker's are)
        c = Container(id=hashlib.sha256(str(next(_ids)).encode()).hexdigest(), service=name, image=image,
                      config_hash=_hash(definition),
                      health="unhealthy" if image in self.sick_images else "healthy")
        self.events.append(("start", name, c.id))
        self.log(name, f"{name} started")
        return c

    def _name(self, c: Container) -> str:
        return f"{self.project}-{c.service}-{1 if self.containers.get(c.service) is c else 2}"

    def migrate_command(self, args: list[str], command: str) -> Result:
        """The release's migration (x-release-migrate) in a one-off, as Django answers it:
        ``migrate --plan`` lists what it would apply; ``showmigrations --plan`` every migration,
        applied or not; ``migrate --noinput`` applies the pending ones in order, each committed on
        its own, up to ``failing_migration`` (which fails and is rolled back); ``migrate APP
        TARGET`` unapplies APP's migrations after TARGET ("zero": all); the reversal check
        (remote/migration_reversal.py) says each is reversible, losing what ``migration_losses``
        names."""
        if _is_reversal_check(args):
            names = json.loads(re.search(r"^NAMES = (.*)$", args[-1], re.M).group(1))
            verdicts = {n: {"reversible": "irreversible" not in " ".join(self.migration_losses.get(n, [])),
                            "loses": self.migration_losses.get(n, [])} for n in names}
            return Result(command, 0, "notes imported\n" + migration_reversal.MARK + json.dumps(verdicts) + "\n")
        if args[-2:] == ["showmigrations", "--plan"]:
            return Result(command, 0, "".join(f"[X]  {m}\n" for m in self.applied_migrations)
                          + "".join(f"[ ]  {m}\n" for m in self.pending_migrations))
        if args[-1] == "--plan":
            self.migration_plans.append(args)
            if self.plan_error:
                return Result(command, 1, "", self.plan_error)
            return Result(command, 0, "Planned operations:\n" + ("".join(
                f"{m}\n    Add field to a model\n" for m in self.pending_migrations)
                or "  No planned migration operations.\n"))
        self.migrations.append(args)
        named = args[args.index("migrate") + 1:-1]
        if named:                                   # migrate APP TARGET: unapply after TARGET
            app, to = named
            mine = [m for m in self.applied_migrations if m.startswith(app + ".")]
            keep = 0 if to == "zero" else next(i for i, m in enumerate(mine) if m == f"{app}.{to}") + 1
            undone = mine[keep:]
            self.applied_migrations = [m for m in self.applied_migrations if m not in undone]
            self.pending_migrations = undone + self.pending_migrations
            return Result(command, 0, "".join(f"  Unapplying {m}... OK\n" for m in reversed(undone)))
        out = "Operations to perform:\n"
        while self.pending_migrations:
            m = self.pending_migrations[0]
            if m == self.failing_migration:
                return Result(command, 1, out + f"  Applying {m}...", "django.db.utils.ProgrammingError: "
                              "column \"body\" does not exist\n")
            self.applied_migrations.append(self.pending_migrations.pop(0))
            out += f"  Applying {m}... OK\n"
        return Result(command, 0, out if "Applying" in out else out + "  No migrations to apply.\n")

    def _one_off(self, argv: list[str], command: str) -> Result:
        self.ran.append(argv)
        code, output = self.answer(argv)
        return Result(command, code, output)

    def _all(self) -> list[Container]:
        return [*self.containers.values(), *self.extra.values()]

    def runs_database(self) -> bool:
        """A PostgreSQL container runs on this engine (what remote.backup.in_database looks for)."""
        db = self.containers.get("postgres")
        return db is not None and db.state == "running"

    def _remove(self, ids: list[str], stop: bool) -> None:
        for c in [c for c in self._all() if c.id in ids]:
            if stop:
                self.events.append(("stop", c.service, c.id))
            if self.extra.pop(c.id, None) is None and self.containers.get(c.service) is c:
                del self.containers[c.service]
                heir = next((x for x in self.extra.values() if x.service == c.service), None)
                if heir is not None:                     # the new container is the service's now
                    self.containers[c.service] = self.extra.pop(heir.id)

    def copy(self) -> "FakeDocker":
        """The engine's state (images, containers, volumes) without its history: a droplet snapshot."""
        return FakeDocker(images=dict(self.images), volumes=set(self.volumes),
                          containers={n: dataclasses.replace(c) for n, c in self.containers.items()},
                          extra={i: dataclasses.replace(c) for i, c in self.extra.items()})

    def _removes_volumes(self, argv: list[str]) -> bool:
        if argv[:3] in (["docker", "volume", "rm"], ["docker", "volume", "prune"]):
            return True
        if "--volumes" in argv and ("prune" in argv or "down" in argv):
            return True
        return argv[:2] == ["docker", "compose"] and ("down" in argv or "rm" in argv) and "-v" in argv

    def _maybe_interrupt(self, where: str) -> None:
        if self.interrupt_at == where:
            self.interrupt_at = None
            raise KeyboardInterrupt
    # `up` leaves its new containers "starting" until a `compose ps` has shown them so (or 5 s
    # passed), then makes them healthy: the states a progress poller sees on a real droplet.
    slow_start: bool = False
    # The migrations a release's `migrate` would apply (Django's `migrate --plan` lists them).
    pending_migrations: list[str] = field(default_factory=list)
    applied_migrations: list[str] = field(default_factory=lambda: ["notes.0001_initial"])
    failing_migration: str = ""   # `migrate` fails at this one, after applying those before it
    migration_losses: dict[str, list[str]] = field(default_factory=dict)   # what reversing one would lose
    migration_plans: list[list[str]] = field(default_factory=list)
    migration_images: list[str] = field(default_factory=list)   # the image of each swarm migration one-off
    plan_error: str = ""          # what `migrate --plan` fails with (a broken release, the database gone)
    # Docker's health lags as on a droplet whose healthchecks run every 10 s: a new container stays
    # "starting" (only its healthcheck run at once, `docker exec`, tells it is ready).
    lagging_health: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)   # one call at a time, as dockerd
    seen_starting: threading.Event = field(default_factory=threading.Event, repr=False)   # a poll came
    # Called with the ids of each `docker inspect` of remote/status.py's CONTAINER_FORMAT before
    # it is answered: a test removes a container there, as a drain that ends between the `docker
    # ps` that listed it and the inspect does.
    before_listing: Callable[[list[str]], None] | None = field(default=None, repr=False)

    def handle(self, argv: list[str], command: str) -> Result:
        with self._lock:
            self.calls.append(argv)
            if self._removes_volumes(argv):   # recorded, and done, so the loss shows
                self.volume_removals.append(argv)
                self.volumes.difference_update(set(self.volumes) if {"prune", "down"} & set(argv) else argv)
                return Result(command, 0, "")
            return self._handle(argv, command)

    def _handle(self, argv: list[str], command: str) -> Result:
        if argv[:2] == ["docker", "info"]:
            return Result(command, 0, "24.0.7\n")
        if argv[:3] == ["docker", "compose", "version"]:
            return Result(command, 0, "2.24.6\n")
        if argv[:2] == ["docker", "compose"]:
            return self._compose(argv, command)
        if argv[:2] == ["docker", "exec"]:
            name = next(a for a in argv[2:] if not a.startswith("-"))
            if not any(c.state == "running" and name in (c.id, self._name(c)) for c in self._all()):
                return Result(command, 1, "", f"Error response from daemon: container {name} is not running\n")
            inner = argv[argv.index(name) + 1:]
            if inner[:1] == ["cat"] and inner[1:2] and inner[1].startswith("/etc/traefik/"):
                return Result(command, 0, "entryPoints: {}\n")    # remote/commands.container_cat
            if inner[:1] in (["pgbr"], ["backup-status"]) and self.containers.get("postgres") is not None \
                    and name in (self.containers["postgres"].id, self._name(self.containers["postgres"])):
                return self.database.exec(inner, command)   # pgBackRest in the postgres container
            return self._one_off(inner, command)
        if argv[:2] == ["docker", "inspect"]:
            return self._inspect(argv, command)
        if argv[:3] == ["docker", "image", "inspect"]:
            refs = argv[argv.index("--format") + 2:]
            by_id: dict[str, list[str]] = {}
            for ref in refs:
                if ref in self.images:
                    by_id.setdefault(self.images[ref], []).append(ref)
            # exit 0 even when none is there: the command ends in `|| true`
            return Result(command, 0, "".join(f"{i} {' '.join(t)}\n" for i, t in by_id.items()))
        if argv[:3] == ["docker", "image", "ls"]:   # every fake image is tagged: none is dangling
            return Result(command, 0, "" if "dangling=true" in argv else "".join(f"{r}\n" for r in sorted(self.images)))
        if argv[:3] == ["docker", "image", "rm"]:
            for ref in argv[3:]:
                if not any(c.image == self.images.get(ref) for c in self.containers.values()):
                    self.images.pop(ref, None)
            return Result(command, 0, "")
        if argv[:2] == ["docker", "ps"]:   # -aq with label filters (project, service, oneoff) and status=running
            service = next((a.split("=", 2)[2] for a in argv if a.startswith("label=com.docker.compose.service=")), None)
            running = "status=running" in argv
            found = [c for c in self._all() if service in (None, c.service) and (not running or c.state == "running")]
            if "--format" in argv and "{{.Status}}" in argv[argv.index("--format") + 1]:   # commands.container_states
                if any(c.health == "starting" for c in found):
                    self.seen_starting.set()
                health = {"healthy": " (healthy)", "starting": " (health: starting)", "unhealthy": " (unhealthy)"}
                return Result(command, 0, "".join(
                    f"{c.id[:12]} {c.service} "
                    + (f"Up 1 minute{health.get(c.health, '')}" if c.state == "running" else c.state.capitalize())
                    + "\n" for c in reversed(found)))
            if "--format" in argv:      # remote/commands.project_containers
                return Result(command, 0, "".join(f"{c.id} {c.service} {c.config_hash}\n" for c in found))
            return Result(command, 0, "".join(c.id + "\n" for c in found))
        if argv[:2] in (["docker", "stop"], ["docker", "rm"]):
            self._remove([a for a in argv[2:] if not a.startswith("-") and not a.isdigit()], stop=argv[1] == "stop")
            return Result(command, 0, "")
        if argv[:2] == ["docker", "logs"]:
            return Result(command, 0, "Traceback: the new release cannot start\n")
        if argv[:3] in (["docker", "image", "prune"], ["docker", "builder", "prune"]):
            return Result(command, 0, "Total reclaimed space: 0B\n")   # every fake image is tagged
        if argv[:3] == ["docker", "system", "df"]:
            return Result(command, 0, "TYPE TOTAL ACTIVE SIZE RECLAIMABLE\n")
        return Result(command, 1, "", f"fake docker: unsupported {argv[1:3]}\n")

    # -- compose ------------------------------------------------------------------------------
    def _compose(self, argv: list[str], command: str) -> Result:
        opts, rest = _split_compose(argv)
        compose = _load_compose(opts["-f"])
        sub, args = rest[0], rest[1:]
        services = [a for a in args if not a.startswith("-") and not a.isdigit()]
        if sub == "build":
            self._maybe_interrupt("build")
            if self.build_output is not None:
                return Result(command, self.build_output[0], "", self.build_output[1])
            return self._build(compose, opts["--project-directory"], services or _buildable(compose), command)
        if sub == "run" and "--entrypoint" in args and args[args.index("--entrypoint") + 1] == "pgbr":
            if self.runs_database():   # pgBackRest's own refusal
                return Result(command, 1, "", "ERROR: [038]: unable to restore while PostgreSQL is running\n")
            return self.database.restore(args[args.index("postgres") + 1:], command)
        if sub == "run" and "--entrypoint" in args and args[args.index("--entrypoint") + 1] == "backup-status":
            return Result(command, 0, self.database.status(server=False))
        if sub == "stop":
            self._remove([c.id for c in self._all() if c.service in services], stop=True)
            return Result(command, 0, "")
        if sub == "run" and is_release_migration(args):
            return self.migrate_command(args, command)
        if sub == "run":
            self.migrations.append(args)
            service = next(a for a in args if not a.startswith("-"))
            return self._one_off(args[args.index(service) + 1:], command)
        if sub == "up" and "--scale" in args:
            name = args[args.index("--scale") + 1].split("=")[0]
            definition = compose[name]
            new = self._start(name, definition, self.images.get(definition.get("image", name), name))
            self.extra[new.id] = new
            if self.lagging_health and new.health == "healthy":
                new.health = "starting"
            if self.slow_start:                       # "starting" until a poll has seen it (or 5 s)
                new.final_health, new.health = new.health, "starting"
                self.seen_starting.clear()
            self._maybe_interrupt(f"scale {name}")      # the new container started, then Ctrl-C
            return Result(command, 0, "")
        if sub == "up":
            return self._up(compose, opts["-p"], services or list(compose), "--force-recreate" in args, command,
                            wait="--wait" in args)
        if sub == "ps":
            return Result(command, 0, self._ps(opts["-p"], "--format" in args))
        if sub == "config" and "--hash" in args:
            return Result(command, 0, "".join(f"{n} {_hash(d)}\n" for n, d in sorted(compose.items())))
        if sub == "config":
            return Result(command, 0, json.dumps(_normalized(compose, opts, self._top(opts["-f"]))))
        if sub == "down":   # the project's containers stop and go; its volumes stay (no -v)
            self._remove([c.id for c in self._all()], stop=True)
            return Result(command, 0, "")
        if sub == "logs":   # `<service>-1  | <time> <line>`, as Compose prints them (--follow: what is there)
            tail = int(args[args.index("--tail") + 1]) if "--tail" in args else None
            out = []
            for name in services or sorted(self.service_logs):
                lines = self.service_logs.get(name, [])
                out += [f"{name}-1  | {t} {text}" for t, text in (lines[-tail:] if tail else [] if tail == 0 else lines)]
            # service by service, as Compose prints a backlog: putting them in time order is the reader's job
            return Result(command, 0, "".join(line + "\n" for line in out))
        if sub == "exec":
            return Result(command, 0, "entryPoints: {}\n")
        return Result(command, 1, "", f"fake compose: unsupported {sub}\n")

    @staticmethod
    def _top(files: list[str]) -> dict:
        top: dict = {}
        for path in files:
            data = _parse_file(Path(path).resolve(), Path(path).resolve().stat().st_mtime_ns)
            for key in ("networks", "volumes"):
                top.setdefault(key, {}).update(data.get(key) or {})
        return top

    def _build(self, compose: dict, folder: str, services: list[str], command: str) -> Result:
        """Tags each service's image ref; the id is a hash of its build context, as with a layer
        cache: the same inputs give the same image."""
        out = []
        for name in sorted(services):
            ref = compose[name]["image"]
            out.append(f" Image {ref} Building")
            if name in self.fail_build:
                return Result(command, 1, "\n".join(out) + "\n", "failed to solve: process did not complete\n")
            build = compose[name]["build"]
            self.images[ref] = _context_id(Path(folder) / (build if isinstance(build, str) else build["context"]))
            if name in self.unhealthy:
                self.sick_images.add(self.images[ref])
            out.append(f" Image {ref} Built")
        return Result(command, 0, "\n".join(out) + "\n")

    def _up(self, compose: dict, project: str, services: list[str], force: bool, command: str,
            wait: bool = True) -> Result:
        started: list[Container] = []
        for name in services:
            ref = (compose.get(name) or {}).get("image", name)
            if (compose.get(name) or {}).get("build") is not None and ref not in self.images:
                return Result(command, 1, "", f"pull access denied for {ref}, repository does not exist\n")
            image = self.images.get(ref, ref)
            definition = compose.get(name) or {}
            self.volumes |= {v.split(":")[0] for v in definition.get("volumes") or []
                             if isinstance(v, str) and not v.startswith((".", "/"))}
            old = self.containers.get(name)
            if old is not None and not force and old.config_hash == _hash(definition):
                continue
            if old is not None:                          # compose's own recreate: stop first
                self._remove([old.id], stop=True)
            self.containers[name] = self._start(name, definition, image)
            started.append(self.containers[name])
        if self.slow_start and started:
            final = {c.id: c.health for c in started}
            for c in started:
                c.health = "starting"
            self.seen_starting.clear()
            self._lock.release()   # other clients (a poller) are answered while containers start
            try:
                self.seen_starting.wait(5)
            finally:
                self._lock.acquire()
            for c in started:
                c.health = final[c.id]
        if self.lagging_health:
            for c in started:
                c.health = "starting" if c.health == "healthy" else c.health
        sick = [n for n in services if self.containers[n].health not in ("healthy", "" if wait else "starting")]
        if sick:
            return Result(command, 1, "", f"container {project}-{sick[0]}-1 is unhealthy\n")
        return Result(command, 0, "")

    def _ps(self, project: str, as_json: bool) -> str:
        if any(c.health == "starting" for c in self._all()):
            self.seen_starting.set()
        # both containers of a service being replaced are listed, the new one last (as compose does)
        rows = [{"Service": c.service, "Name": f"{project}-{c.service}-1", "State": c.state, "Health": c.health,
                 "Status": f"Up 1 minute ({c.health})", "ID": c.id[:12], "Image": c.image}
                for c in self._all()]
        if as_json:
            return "".join(json.dumps(r) + "\n" for r in rows)
        return "".join(f"{r['Name']} {r['Status']}\n" for r in rows)

    def _inspect(self, argv: list[str], command: str) -> Result:
        fmt, ids = argv[argv.index("--format") + 1], argv[argv.index("--format") + 2:]
        if '"restarts":' in fmt and self.before_listing is not None:
            self.before_listing(ids)
        found = [c for c in self._all() for i in ids if c.id.startswith(i) or self._name(c) == i.lstrip("/")]
        if '"restarts":' in fmt:   # remote/status.py's CONTAINER_FORMAT
            # as dockerd: the containers it has are printed, each id it has not is an error
            gone = [i for i in ids if not any(c.id.startswith(i) for c in self._all())]
            return Result(command, 1 if gone else 0, "".join(json.dumps({
                "service": c.service, "container": "/" + self._name(c), "state": c.state,
                "health": c.health if c.state == "running" else "", "started": c.started, "restarts": c.restarts,
                "image": c.image, "exit": c.exit_code, "id": c.id, "image_id": c.image,
                "config_hash": c.config_hash, "number": self._name(c).rsplit("-", 1)[1]}) + "\n" for c in found),
                "".join(f"Error: No such object: {i}\n" for i in gone))
        if fmt.startswith("{{.Id}}") and ".Config.Env" in fmt:    # remote/commands.containers_env
            return Result(command, 0, "".join(
                f"{c.id} " + json.dumps(["PATH=/usr/bin", "POSTGRES_PASSWORD=from-container"]) + "\n"
                for c in found))
        if fmt.startswith("{{.Id}} {{.Image}}"):   # remote/commands.inspect_containers
            return Result(command, 0, "".join(f"{c.id} {c.image} {c.service} {c.config_hash}\n" for c in found))
        if ".Config.Healthcheck" in fmt:   # `health <service>`, answered by `docker exec` (FakeDocker.answer)
            return Result(command, 0, "".join(f'{c.id} /{self._name(c)} {{"Test": ["CMD", "health", "{c.service}"]}}\n'
                                              for c in found))
        if "{{.State.Status}}" in fmt:
            for c in found:
                if c.health == "starting" and c.final_health:
                    self._lock.release()      # a poller is answered while the container starts
                    try:
                        self.seen_starting.wait(5)
                    finally:
                        self._lock.acquire()
                    c.health, c.final_health = c.final_health, ""
            return Result(command, 0, "".join(f"{c.state} {c.health}\n" for c in found))
        if "{{.Id}}" in fmt:
            return Result(command, 0, "".join(f"{c.id} {c.image} {c.service}\n" for c in found))
        if ".State.Health" in fmt:
            return Result(command, 0, "".join(json.dumps({"Status": c.health}) + "\n" for c in found))
        if ".Config.Env" in fmt:
            return Result(command, 0, json.dumps(["PATH=/usr/bin", "POSTGRES_PASSWORD=from-container"]) + "\n")
        return Result(command, 0, "172.18.0.2\n")


def _split_compose(argv: list[str]) -> tuple[dict, list[str]]:
    opts: dict = {"-f": []}
    i = 2
    while i < len(argv) and argv[i] in ("-p", "--project-directory", "-f", "--env-file"):
        if argv[i] == "-f":
            opts["-f"].append(argv[i + 1])
        else:
            opts[argv[i]] = argv[i + 1]
        i += 2
    return opts, argv[i:]


def _load_compose(files: list[str]) -> dict:
    services: dict = {}
    for path in files:  # later files override keys of earlier ones, service by service (as compose does)
        for name, definition in _parse(Path(path).resolve(), Path(path).resolve().stat().st_mtime_ns).items():
            services[name] = {**services.get(name, {}), **(definition or {})}
    return services


@functools.lru_cache(maxsize=64)
def _parse_file(path: Path, mtime_ns: int) -> dict:
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def _parse(path: Path, mtime_ns: int) -> dict:
    return _parse_file(path, mtime_ns).get("services") or {}


def _normalized(services: dict, opts: dict, top: dict) -> dict:
    """`compose config --format json` as compose prints it, as far as the deployer reads it:
    ports, volumes and networks in their long form, top-level networks and volumes named
    <project>_<name>, bind sources absolute under the project folder (not resolved: `current`
    stays a link). Not done: interpolation (values stay ${VAR:?...}), size and duration units."""
    project = opts.get("-p", "")
    folder = opts.get("--project-directory") or os.path.dirname(opts["-f"][0])

    def port(p):
        if isinstance(p, dict):
            return p
        published, _, target = str(p).rpartition(":")
        return {"mode": "ingress", "target": int(target), "published": published, "protocol": "tcp"}

    def volume(v):
        if isinstance(v, dict):
            return v
        source, target, *mode = str(v).split(":")
        if source.startswith((".", "/")):
            out = {"type": "bind", "source": os.path.normpath(os.path.join(folder, source)), "target": target,
                   "bind": {"create_host_path": True}}
        else:
            out = {"type": "volume", "source": source, "target": target, "volume": {}}
        return out | ({"read_only": True} if mode == ["ro"] else {})

    out = {}
    for name, d in services.items():
        d = dict(d or {})
        if d.get("ports"):
            d["ports"] = [port(p) for p in d["ports"]]
        if d.get("volumes"):
            d["volumes"] = [volume(v) for v in d["volumes"]]
        if isinstance(d.get("networks"), list):
            d["networks"] = {n: None for n in d["networks"]}
        out[name] = d
    return {"name": project, "services": out,
            **{key: {n: {"name": f"{project}_{n}", **(v or {})} for n, v in top.get(key, {}).items()}
               for key in ("networks", "volumes") if top.get(key)}}


def _hash(definition: dict) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()


def _context_id(context: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes())
    return "sha256:" + digest.hexdigest()


def _buildable(compose: dict) -> list[str]:
    return [name for name, svc in compose.items() if (svc or {}).get("build") is not None]


def is_release_migration(argv: list[str]) -> bool:
    """The release's migrate command, as the deployer varies it (--plan, showmigrations --plan, APP
    TARGET); not an operator's `inv manage -- showmigrations`."""
    return (argv[-2:] in (["migrate", "--plan"], ["showmigrations", "--plan"])
            or (argv[-1:] == ["--noinput"] and "migrate" in argv) or _is_reversal_check(argv))


def _is_reversal_check(argv: list[str]) -> bool:
    return argv[-3:-1] == ["shell", "-c"] and migration_reversal.MARK in argv[-1]


class _Shell:
    """One long-lived bash that runs each command in a subshell: a fork, not a new bash per
    command (about 10 ms each on a loaded machine, and a deploy sends about a hundred)."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="fake-droplet-shell-")
        # `docker` is always the stub: no command of a test ever reaches this machine's engine
        self._proc = subprocess.Popen(["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True,
                                      env={**os.environ, "LC_ALL": "C",
                                           "PATH": DockerStub.folder() + os.pathsep + os.environ.get("PATH", "")})
        self.alive = True

    def run(self, command: str, timeout: float) -> Result:
        out, err = Path(self._dir, "out"), Path(self._dir, "err")
        assert self._proc.stdin is not None and self._proc.stdout is not None
        # The command on lines of its own, so a heredoc or a trailing comment cannot eat the `)`.
        self._proc.stdin.write(f"(\n{command}\n) >{out} 2>{err} </dev/null; echo $?\n")
        self._proc.stdin.flush()
        # As `timeout` would over SSH: a hung command ends with 124, and the shell is replaced.
        if not select.select([self._proc.stdout], [], [], timeout)[0]:
            self._proc.kill()
            self.alive = False
            return Result(command, 124, "", f"timed out after {timeout:g} s\n")
        code = int(self._proc.stdout.readline())
        return Result(command, code, out.read_text(), err.read_text())


class _Shells:
    """The shells commands run in, one command per shell at a time: commands sent side by side
    (collect's, the cutover's) run side by side, as on an SSH connection's channels."""

    def __init__(self) -> None:
        self._free: list[_Shell] = []
        self._lock = threading.Lock()

    def run(self, command: str, timeout: float) -> Result:
        with self._lock:
            shell = self._free.pop() if self._free else None
        shell = shell or _Shell()
        try:
            return shell.run(command, timeout)
        finally:
            if shell.alive:
                with self._lock:
                    self._free.append(shell)


@functools.lru_cache(maxsize=1)
def _shell() -> _Shells:
    return _Shells()


class _LocalSftp:
    """The part of paramiko's SFTPClient that SshExecutor.put uses, on this machine's files.
    ``full``: every write fails as SFTP reports a full disk (a bare "Failure", SSH_FX_FAILURE)."""

    def __init__(self, full: bool = False) -> None:
        self.full = full

    def open(self, path: str, mode: str) -> "_LocalSftp._File":
        return self._File(path, self.full)

    def posix_rename(self, src: str, dest: str) -> None:
        os.replace(src, dest)

    def remove(self, path: str) -> None:
        os.remove(path)

    class _File:
        def __init__(self, path: str, full: bool) -> None:
            self.path, self.full = path, full
            Path(path).write_bytes(b"")       # created on open, as an SFTP open does

        def __enter__(self) -> "_LocalSftp._File":
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def chmod(self, mode: int) -> None:
            os.chmod(self.path, mode)

        def set_pipelined(self, flag: bool) -> None:
            return None

        def write(self, data: bytes) -> None:
            if self.full:
                raise OSError("Failure")
            with open(self.path, "ab") as fh:
                fh.write(data)


Fault = Callable[[str, str], None]   # (edge, detail): may raise, e.g. ("run", command), ("put", path)


class FakeDroplet:
    """An executor for remote.host.Host: shell for files, FakeDocker for docker and curl.
    Files are written through the real SshExecutor.put over a local stand-in for SFTP."""

    def __init__(self, root: Path, docker: FakeDocker, host: str = "203.0.113.10", fault: Fault | None = None,
                 home: Path | None = None) -> None:
        self.root = root
        self.home = home            # the deploy user's $HOME for the shell's commands (its ~/.ssh)
        self.docker = docker
        self.host = host
        self.commands: list[str] = []
        self.closed = False
        self.files_put: list[str] = []
        self.fault = fault          # called before each command and upload (tests/flows/faults.py)
        self.disk_full_on: str | None = None   # uploads to paths containing this fail as on a full disk
        # What cloud-init's probe answers, one per poll; the last one repeats.
        self.cloud_init = ['state: done\n{"v1": {"datasource": "DataSourceNoCloud", "errors": []}}']
        self.streamed: list[tuple[str, bool]] = []      # (command, pty) of each Host.stream
        self.attached: list[tuple[str, bool]] = []      # (command, pty) of each Host.interactive
        self._stub: DockerStub | None = None

    def run(self, command: str, timeout: float | None = None) -> Result:
        self.commands.append(command)
        if self.fault is not None:
            self.fault("run", command)
        if "/run/cloud-init/result.json" in command:   # remote.commands.cloud_init_state
            answer = self.cloud_init.pop(0) if len(self.cloud_init) > 1 else self.cloud_init[0]
            return Result(command, 0, answer + "\n")
        first = command.split(None, 1)[0] if command.strip() else ""
        if command.startswith("c=$(docker ps "):   # remote.backup.in_database: in the postgres container
            if not self.docker.runs_database():
                return Result(command, backup_cmd.NO_CONTAINER, "", "no running postgres container\n")
            return self.docker.database.exec(exec_argv(command), command)
        if _DOCKER_CALL.search(command, 1 if first == "docker" else 0):   # docker inside a script
            return self._script(command, timeout or 60)
        if first == "docker" and " api-get " in command and "/api/rawdata" in command:
            # Traefik's API, read inside its container (remote/commands.traefik_api_get)
            return Result(command, 0, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
                          + json.dumps({"routers": {}, "services": {}}))
        if first == "docker":
            argv = shlex.split(command.split(" && ")[0])
            for stop in ("||", ">/dev/null", "2>/dev/null", "2>&1"):   # shell plumbing after the docker argv
                argv = argv[:argv.index(stop)] if stop in argv else argv
            return self.docker.handle(argv, command)
        if first == "curl":  # the HTTPS probes answer headers
            return Result(command, 0, "HTTP/2 200\nstrict-transport-security: max-age=31536000\n")
        if self.home is not None:
            command = f"export HOME={shlex.quote(str(self.home))}\n{command}"
        return _shell().run(command, timeout or 60)

    def _script(self, command: str, timeout: float) -> Result:
        """The command in the local shell, its `docker` the stub that asks this droplet's engine."""
        if self._stub is None:
            self._stub = DockerStub(self.docker)
        return _shell().run(f"export FAKE_DOCKER_SOCKET={shlex.quote(self._stub.socket_path)}\n{command}", timeout)

    def stream(self, command: str, on_line: Callable[[str], None], pty: bool = False) -> Result:
        """Each line of the command's output in turn. A `--follow` never ends by itself: after the
        lines there are, the operator presses Ctrl-C."""
        self.streamed.append((command, pty))
        res = self.run(command)
        lines = res.output.splitlines()
        for line in lines:
            on_line(line)
        if "--follow" in command:
            raise KeyboardInterrupt
        return Result(command, res.exited, "".join(line + "\n" for line in lines[-20:]))

    def interactive(self, command: str, pty: bool, stdin, stdout, stderr) -> int | None:
        """The command attached to the operator's terminal: its output written there."""
        self.attached.append((command, pty))
        res = self.run(command)
        stdout.write(res.stdout)
        stderr.write(res.stderr)
        return res.exited

    def put(self, path: str, data: bytes, mode: int | None = None) -> None:
        self.files_put.append(path)
        if self.fault is not None:
            self.fault("put", path)
        sftp = _LocalSftp(full=bool(self.disk_full_on) and self.disk_full_on in path)
        SshExecutor(SimpleNamespace(host=self.host, is_connected=True, transport=self, open=lambda: None,
                                    client=SimpleNamespace(open_sftp=lambda: sftp))).put(path, data, mode)

    def close(self) -> None:
        self.closed = True
        if self._stub is not None:
            self._stub.close()
            self._stub = None


# A docker command anywhere but at the very start: after ; & | ( { $( a line break, xargs, then, do.
_DOCKER_CALL = re.compile(r"(?:^|[;&|({\n]|\$\(|\bxargs(?:\s+-\S+)*|\b(?:then|do|else))\s*docker\s")

_STUB = """#!{python} -SE
# docker for the fake droplet's shell: asks the FakeDocker behind FAKE_DOCKER_SOCKET; never a real engine
import json, os, socket, sys
path = os.environ.get("FAKE_DOCKER_SOCKET")
if not path:
    sys.exit("fake docker: no FAKE_DOCKER_SOCKET")
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall((json.dumps(["docker", *sys.argv[1:]]) + "\\n").encode())
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
reply = json.loads(data)
sys.stdout.write(reply["stdout"])
sys.stderr.write(reply["stderr"])
sys.exit(reply["exit"])
"""


class DockerStub:
    """Answers the stub's calls from one FakeDocker, on a Unix socket of its own (a thread)."""

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def folder() -> str:
        path = Path(tempfile.mkdtemp(prefix="fake-docker-bin-")) / "docker"
        path.write_text(_STUB.format(python=sys.executable))
        path.chmod(0o755)
        return str(path.parent)

    def __init__(self, docker: "FakeDocker") -> None:
        self.docker = docker
        self.socket_path = os.path.join(tempfile.mkdtemp(prefix="fake-docker-"), "s")
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(self.socket_path)
        self._server.listen(8)
        threading.Thread(target=self._serve, name="fake-docker", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return          # closed
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                argv = json.loads(data)
                res = self.docker.handle(argv, shlex.join(argv))
                conn.sendall(json.dumps({"exit": res.exited if res.exited is not None else 124,
                                         "stdout": res.stdout, "stderr": res.stderr}).encode())

    def close(self) -> None:
        self._server.close()


@dataclass
class FakeCloud:
    """The DigitalOcean edge: token, provision, find, plan, the cluster calls of NODES > 1 and the
    destroy's inventory and removal; every call recorded. The account's droplets stay here between runs: node 1 (``exists``, at
    ``ip``; ``tagged`` once it carries the cluster tag) and the nodes 2.. that carry the cluster
    tag (``members``, by number), so a second deploy finds what the first created and a smaller
    NODES leaves surplus to delete. Not modelled: the firewall and DNS (always "unchanged" and
    "managed"), VPCs (one), SSH waits, concurrent deploys, droplets of other names."""

    WRITES = frozenset({"provision", "provision+token", "provision_cluster", "delete_surplus", "remove_stack"})

    ip: str = "203.0.113.10"
    exists: bool = True
    token_ok: bool = True
    fail_after_droplet: Exception | None = None   # raised once the droplet is known (e.g. a firewall fault)
    members: dict[int, cloud.DropletInfo] = field(default_factory=dict)   # swarm nodes 2.. by number
    tagged: bool = False                          # node 1 carries the cluster tag
    addresses: dict[str, str] = field(default_factory=dict)   # name -> the public address a new node gets
    deleted: list[str] = field(default_factory=list)           # droplets deleted, in order
    calls: list[str] = field(default_factory=list)
    # `inv destroy`: the stack's other resources (until removed), its data, what stays and why
    leftovers: list[cloud.Item] = field(default_factory=lambda: [
        cloud.Item("dns", "app.example.test", "A -> 203.0.113.10", "domains/example.test/records/7"),
        cloud.Item("firewall", "stackdeploy-1", "id fw-1", "firewalls/fw-1")])
    data: list[cloud.Item] = field(default_factory=list)
    kept: list[cloud.Kept] = field(default_factory=list)
    backups: tuple[str, ...] = ()
    removed: list[str] = field(default_factory=list)           # "<kind> <name>" removed by remove_stack, in order
    fail_removing: str | None = None                            # remove_stack fails at the first item of this kind, once
    ssh_keys: list[str] = field(default_factory=list)           # the account's SSH keys (their blobs), in order

    def _droplet(self, created: bool) -> cloud.DropletInfo:
        return cloud.DropletInfo(id=42, name="stackdeploy-1", region="fra1", size="s-2vcpu-4gb",
                                 status="active", public_ipv4=self.ip, created=created, private_ipv4="10.110.0.10")

    def name_at(self, address: str) -> str | None:
        """The droplet SSH reaches at ``address`` (the first listed there, as one machine)."""
        return next((d.name for d in self._listed() if d.public_ipv4 == address), None)

    def check_token(self, spec: cloud.CloudSpec) -> cloud.AccountInfo:
        self.calls.append("check_token")
        if not spec.token:
            raise cloud.TokenMissing("DIGITALOCEAN_TOKEN is not set: the DigitalOcean API token is missing",
                                     cloud.TOKEN_HINT)
        if not self.token_ok:
            raise cloud.TokenRejected("DigitalOcean rejected the API token (401 Unauthorized)", cloud.TOKEN_HINT)
        return cloud.AccountInfo(email="ops@example.com", uuid="u-1", droplet_limit=10)

    def provision(self, spec: cloud.CloudSpec, on_event=None, account=None, on_droplet=None) -> cloud.ProvisionResult:
        self.calls.append("provision" if account is not None else "provision+token")
        self._refuse_swarm_leader(spec)
        created = not self.exists
        self.exists = True
        if on_droplet is not None:  # as the adapter does: as soon as it is found or created, before its IP
            on_droplet(dataclasses.replace(self._droplet(created), status="new", public_ipv4=None))
        if self.fail_after_droplet is not None:
            raise self.fail_after_droplet
        return cloud.ProvisionResult(droplet=self._droplet(created),
                                     firewall=cloud.FirewallResult("unchanged", "198.51.100.7", []),
                                     dns=cloud.DnsResult("managed", [], None), warnings=[], changed=created)

    def _refuse_swarm_leader(self, spec: cloud.CloudSpec) -> None:
        """As the real adapter: one droplet (NODES=1) asked of node 1 of a swarm is refused."""
        if self.exists and self.tagged and spec.nodes == 1:
            tag = cloud.cluster_tag(spec.droplet_name)
            raise cloud.CloudError(f"droplet {spec.droplet_name} is node 1 of a Docker Swarm (it carries the tag "
                                   f"{tag}), and NODES is 1", f"set NODES (or --nodes) to the swarm's node count: "
                                   f"its droplets carry the tag {tag}")

    def find_cluster(self, spec: cloud.CloudSpec) -> list[cloud.DropletInfo]:
        self.calls.append("find_cluster")
        return [self._droplet(False), *(d for _, d in sorted(self.members.items()))] if self.exists else []

    def plan_cluster(self, spec: cloud.CloudSpec, on_event=None) -> cloud.ClusterPlan:
        self.calls.append("plan_cluster")
        found = {k: d for k, d in self.members.items()} | ({1: self._droplet(False)} if self.exists else {})
        names = cloud.node_names(spec.droplet_name, spec.nodes)
        return cloud.ClusterPlan(tag=cloud.cluster_tag(spec.droplet_name),
                                 nodes=tuple((n, found.get(k)) for k, n in enumerate(names, 1)),
                                 surplus=tuple(d for k, d in sorted(found.items()) if k > spec.nodes))

    def provision_cluster(self, spec: cloud.CloudSpec, on_event=None, account=None, on_droplet=None,
                          host_key_for=None) -> cloud.ClusterResult:
        """As deploy/cloud.py's: node 1 found or created, nodes 2..N found by the tag or created
        (each asking ``host_key_for`` its key), every node tagged and reported to ``on_droplet``
        (first without an address, then active); nodes beyond N come back as surplus, untouched."""
        self.calls.append("provision_cluster")
        if spec.nodes == 1:
            one = self.provision(spec, on_event, account, on_droplet)
            return cloud.ClusterResult(nodes=(one.droplet,), surplus=(), tag="", vpc_uuid=None, firewall=one.firewall,
                                       dns=one.dns, warnings=one.warnings, changed=one.changed)
        if host_key_for is None:
            raise cloud.CloudError("no SSH host keys were generated for the cluster's nodes",
                                   "provision through deploy.steps, which generates and pins one per node")
        report = on_droplet or (lambda _d: None)
        made: list[cloud.DropletInfo] = []
        for k, name in enumerate(cloud.node_names(spec.droplet_name, spec.nodes), 1):
            if k == 1:
                node = self._droplet(created=not self.exists)
                self.exists = True
            elif k in self.members:
                node = self.members[k]
            else:
                host_key_for(name)       # the real adapter puts it in the node's cloud-init
                node = cloud.DropletInfo(id=100 + k, name=name, region="fra1", size="s-2vcpu-4gb", status="active",
                                         public_ipv4=self.addresses.get(name, f"203.0.113.{20 + k}"), created=True,
                                         private_ipv4=f"10.110.0.{k}")
                self.members[k] = dataclasses.replace(node, created=False)
            report(dataclasses.replace(node, status="new", public_ipv4=None, private_ipv4=None) if node.created else node)
            made.append(node)
        self.tagged = True
        if self.fail_after_droplet is not None:
            raise self.fail_after_droplet
        for node in made:
            report(node)
        return cloud.ClusterResult(nodes=tuple(made), surplus=tuple(d for k, d in sorted(self.members.items())
                                                                    if k > spec.nodes),
                                   tag=cloud.cluster_tag(spec.droplet_name), vpc_uuid="vpc-fra1",
                                   firewall=cloud.FirewallResult("unchanged", "198.51.100.7", []),
                                   dns=cloud.DnsResult("managed", [], None), warnings=[],
                                   changed=any(n.created for n in made))

    def delete_surplus(self, spec: cloud.CloudSpec, surplus, on_event=None) -> list[str]:
        """Only a tagged node numbered beyond spec.nodes with an id given: never node 1."""
        self.calls.append("delete_surplus")
        wanted = {d.id for d in surplus}
        gone = [k for k, d in sorted(self.members.items()) if k > spec.nodes and d.id in wanted]
        for k in gone:
            self.deleted.append(self.members.pop(k).name)
        return self.deleted[-len(gone):] if gone else []

    def _listed(self) -> list[cloud.DropletInfo]:
        return ([self._droplet(False)] if self.exists else []) + [d for _, d in sorted(self.members.items())]

    def stack_inventory(self, spec: cloud.CloudSpec, known_addresses=(), on_event=None) -> cloud.StackInventory:
        """As deploy/cloud/teardown.py's: the droplets there are, the leftovers, the data and what stays."""
        self.calls.append("stack_inventory")
        droplets = self._listed()

        def kind(name: str) -> tuple[cloud.Item, ...]:
            return tuple(i for i in self.leftovers if i.kind == name)
        return cloud.StackInventory(
            droplets=tuple(cloud.Item("droplet", d.name, f"id {d.id}, {d.public_ipv4}", f"droplets/{d.id}")
                           for d in droplets),
            records=kind("dns"), firewalls=kind("firewall"), keys=kind("ssh-key"), tags=kind("tag"),
            data=tuple(self.data), kept=tuple(self.kept), backups=self.backups,
            addresses=tuple(d.public_ipv4 for d in droplets if d.public_ipv4), names=tuple(d.name for d in droplets),
            swarm=bool(self.members), leader_ip=self.ip if self.exists else None)

    def remove_stack(self, spec: cloud.CloudSpec, items, on_event=None) -> list[cloud.Item]:
        self.calls.append("remove_stack")
        for item in items:
            if item.kind == self.fail_removing:
                self.fail_removing = None
                raise cloud.CloudUnavailable(f"the DigitalOcean API kept failing while deleting {item.kind} {item.name}",
                                             "wait a few minutes and run again")
            if item.kind == "droplet" and item.name == spec.droplet_name:
                self.exists = self.tagged = False
            elif item.kind == "droplet":
                self.members = {k: d for k, d in self.members.items() if d.name != item.name}
            self.leftovers = [i for i in self.leftovers if i != item]
            self.data = [i for i in self.data if i != item]
            self.removed.append(f"{item.kind} {item.name}")
        return list(items)

    def replace_ssh_key(self, spec: cloud.CloudSpec, new_public_key: str, on_event=None) -> cloud.KeyChange:
        """As the adapter: the new key registered first, then the old one (``spec``'s) removed."""
        self.calls.append("replace_ssh_key")
        new, old = new_public_key.split()[1], spec.ssh_public_key.split()[1]
        registered = new not in self.ssh_keys
        if registered:
            self.ssh_keys.append(new)
        removed = old in self.ssh_keys
        if removed:
            self.ssh_keys.remove(old)
        return cloud.KeyChange(registered, removed)

    def plan_provision(self, spec: cloud.CloudSpec, on_event=None, account=None) -> cloud.ProvisionPlan:
        self.calls.append("plan_provision")
        hosts = cloud.dns_hosts(spec.domain or "", spec.subdomains)
        sources = ["198.51.100.7/32"]
        if self.exists:
            return cloud.ProvisionPlan("found", spec.droplet_name, "fra1", "s-2vcpu-4gb", "", self._droplet(False),
                                       "unused", cloud.FirewallPlan("unchanged", "198.51.100.7", sources, sources),
                                       cloud.DnsResult("managed", [], None), [])
        return cloud.ProvisionPlan("create", spec.droplet_name, spec.region, spec.size, spec.image, None, "register",
                                   cloud.FirewallPlan("create", "198.51.100.7", sources, []),
                                   cloud.DnsResult("managed", [{"name": h, "action": "create", "from": None, "to": None}
                                                               for h in hosts], None), [])


@dataclass
class FakeChecks:
    """The outside-in checks: every check passes unless named in ``failing``."""

    failing: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    dns_answer: list[str] | None = None   # what the domain resolves to: the real dns check judges it
    cert_days: int = 60                   # days the served certificate has left (`inv status`)
    cert_error: Exception | None = None   # reading the served certificate fails so

    def certificate(self, target: checks.PublicSite, timeout: float) -> CertificateInfo:
        """What the edge serves: a staging certificate ``cert_days`` from expiry (or ``cert_error``)."""
        self.calls.append(f"certificate {target.ip}")
        if self.cert_error is not None:
            raise self.cert_error
        now = datetime.now(timezone.utc)
        return CertificateInfo(subject=f"CN={target.domain}", subject_cn=target.domain,
                               issuer="CN=(STAGING) Ersatz Edamame E1", issuer_cn="(STAGING) Ersatz Edamame E1",
                               issuer_o="(STAGING) Let's Encrypt", san=(target.domain,),
                               not_before=(now - timedelta(days=30)).isoformat(),
                               not_after=(now + timedelta(days=self.cert_days, hours=1)).isoformat(),
                               serial="1", sha256="0" * 64)

    def __call__(self, target: checks.PublicSite, config: checks.ChecksConfig) -> ChecksReport:
        self.calls.append(target.ip)
        names = ("home", "api-health", "tls", "headers")
        results = [CheckResult(name=n, status="fail" if n in self.failing else "pass", observed="ok",
                               expected="ok", message=f"{n} answered") for n in names]
        files = {"http/home.txt": "HTTP/2 200\n"}
        if self.dns_answer is not None:
            answer = list(self.dns_answer)
            ctx = Context(target, config, session=None)  # type: ignore[arg-type] - the dns check sends no HTTP
            with mock.patch.object(dns_check, "resolve", lambda name: answer), \
                    mock.patch.object(dns_check, "ask", lambda name, rdtype, servers, timeout: answer):
                results.insert(0, dns_check.check_dns(ctx))
            files.update(ctx.files)
        return ChecksReport(results=results, files=files)


class Unreachable:
    """A connector whose droplet does not answer SSH."""

    def __call__(self, ssh) -> object:
        def refuse(quick: bool):
            raise SshError(f"cannot reach {ssh.host}:{ssh.port}: connection refused",
                           "check the droplet is running and the firewall allows SSH from this machine")
        return refuse


def gone_pid() -> int:
    """The id of a process that has exited: a deployer killed while it held the lock."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
