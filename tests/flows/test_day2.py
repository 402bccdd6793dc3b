"""The day-2 tasks (status, logs, exec, manage, shell) on one droplet and on a 3-node swarm, through
the same flows: what they show, what they send, the exit codes, the bad inputs (each exit 2
with the fix), and the redaction of a secret a service prints."""
from __future__ import annotations

import io
import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

from deploy.taskrun import PROJECT_ROOT
from tests.flows.conftest import World, _session_secrets, flows
from tests.flows.fake_swarm import FakeSwarm, docr, use_swarm  # noqa: F401 - docr is a fixture
from tests.flows.fakes import Unreachable

SCHEMA = json.loads((PROJECT_ROOT / "docs" / "status.schema.json").read_text())
NODES = ["stackdeploy-1", "stackdeploy-1-2", "stackdeploy-1-3"]


class Stack:
    """A world with a live release on ``nodes`` droplets, and the hands to break and mend it."""

    def __init__(self, world: World, swarm: FakeSwarm | None) -> None:
        self.world, self.swarm = world, swarm

    @property
    def nodes(self) -> int:
        return 3 if self.swarm else 1

    def engine(self, node: str = NODES[0]):
        return self.swarm.engine(node) if self.swarm else self.world.docker

    def stop(self, service: str) -> None:
        """Its containers exit (Compose) / its tasks fail (Swarm), as after a crash."""
        if self.swarm is None:
            container = self.world.docker.containers[service]
            container.state, container.exit_code = "exited", 1
            return
        for task in self.tasks(service):
            task.state, task.error = "Failed", "task: non-zero exit (1)"

    def mend(self, service: str) -> None:
        if self.swarm is None:
            self.world.docker.containers[service].state = "running"
            return
        for task in self.tasks(service):
            task.state, task.error = "Running", ""

    def tasks(self, service: str) -> list:
        return [t for t in self.swarm.tasks if t.service == f"stackdeploy_{service}" and t.desired == "Running"]

    def commands_since(self, since: int) -> dict[str, list[str]]:
        """Commands each droplet got over connections opened from ``since`` on, by droplet name."""
        names = {d.public_ipv4: d.name for d in self.world.cloud.find_cluster(None)}
        out: dict[str, list[str]] = {}
        for droplet in self.world.droplets[since:]:
            out.setdefault(names[droplet.host], []).extend(droplet.commands)
        return out


@pytest.fixture(params=[1, 3], ids=["1-node", "3-nodes"])
def stack(request, world: World) -> Stack:
    world.cloud.exists = False
    swarm = use_swarm(world, request.getfixturevalue("docr"), nodes=3) if request.param == 3 else None
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 0, out.message
    return Stack(world, swarm)


def run(world: World, task: str, flow, **kwargs):
    """The task as `inv` runs it, with its stdout: (Outcome, what it printed)."""
    printed = io.StringIO()
    takes_out = flow in (flows.status, flows.logs)
    outcome = world.invoke(task, flow, mode=task, **({"out": printed} if takes_out else {}), **kwargs)
    return outcome, printed.getvalue()


# -- status -------------------------------------------------------------------------------------------

def test_status_is_one_screen_from_one_command_on_the_leader_and_exits_0_when_healthy(stack):
    since = len(stack.world.droplets)
    out, screen = run(stack.world, "status", flows.status)
    assert out.exit_code == 0, out.message
    assert screen.startswith("stackdeploy: HEALTHY (" + ("1 droplet, Docker Compose)" if stack.nodes == 1
                                                         else "3 droplets, Docker Swarm)"))
    for name in NODES[:stack.nodes]:
        assert re.search(rf"^droplet +{re.escape(name)} +\S+ +fra1 +active +disk [\d.]+ GB free", screen, re.M)
    assert re.search(r"^release +\S+ +live for ", screen, re.M)
    assert re.search(r"^last deploy +deploy \(full\): success, \d+ s ago", screen, re.M)
    assert re.search(r"^certificate +60 days left \(until \d{4}-\d\d-\d\d, \(STAGING\)", screen, re.M)
    assert re.search(r"^last backup +none found", screen, re.M)     # a new stack: no backup yet
    for service in ("traefik", "api", "django", "worker", "postgres"):
        assert re.search(rf"^{service} +running", screen, re.M)
    sent = stack.commands_since(since)
    assert len(sent[NODES[0]]) == 1                      # everything about what runs: one round trip
    assert all(len(sent[n]) == 1 and sent[n][0].startswith("df ") for n in NODES[1:stack.nodes])
    assert (out.run.folder / "status.txt").read_text() == screen


def test_status_shows_when_the_newest_backup_ended_from_the_same_round_trip(stack):
    stack.world.docker.database.full("20261206-010000F", stop=time.time() - 7200)
    stack.world.docker.database.full("20261206-020000F", stop=time.time() - 3600)
    out, screen = run(stack.world, "status", flows.status)
    assert out.exit_code == 0, out.message
    newest = datetime.fromtimestamp(stack.world.docker.database.backups[-1]["timestamp"]["stop"], timezone.utc)
    assert re.search(rf"^last backup +{newest:%Y-%m-%dT%H:%M:%S}Z, 1 h( 0 min)? ago", screen, re.M), screen


def test_status_json_follows_the_documented_schema(stack):
    out, printed = run(stack.world, "status", flows.status, as_json=True)
    data = json.loads(printed)
    jsonschema.validate(data, SCHEMA)
    assert (data["health"], data["runtime"], data["problems"]) == (
        "healthy", "compose" if stack.nodes == 1 else "swarm", [])
    assert [d["name"] for d in data["droplets"]] == NODES[:stack.nodes]
    assert all(d["reachable"] and d["disk"]["free_bytes"] > 0 for d in data["droplets"])
    api = next(s for s in data["services"] if s["name"] == "api")
    assert api["running"] == api["desired"] == stack.nodes and api["problem"] is None
    assert data["release"]["outcome"] == "success" and data["last_backup"] is None
    assert data["last_deploy"]["task"] == "deploy" and data["certificate"]["days_left"] == 60
    assert json.loads((out.run.folder / "status.json").read_text())["health"] == "healthy"


def test_status_exits_1_while_a_service_is_stopped_and_0_once_it_is_back(stack):
    stack.stop("worker")
    out, screen = run(stack.world, "status", flows.status)
    assert out.exit_code == 1
    assert "stackdeploy: DEGRADED" in screen and re.search(r"^  ! worker: (exited \(exit 1\)|failed \(task: "
                                                          r"non-zero exit \(1\)\))", screen, re.M)
    assert "degraded: worker" in out.message and "inv logs SERVICE" in out.message
    assert out.manifest["outcome"] == "failed"
    stack.mend("worker")
    assert run(stack.world, "status", flows.status)[0].exit_code == 0


def test_status_counts_an_unhealthy_or_restarting_container_as_degraded(world):
    world.cloud.exists = False
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.docker.containers["api"].health = "unhealthy"
    out, printed = run(world, "status", flows.status, as_json=True)
    assert out.exit_code == 1 and json.loads(printed)["problems"] == ["api: unhealthy"]
    world.docker.containers["api"].health = "healthy"
    world.docker.containers["beat"].state = "restarting"
    world.docker.containers["beat"].restarts = 7
    out, printed = run(world, "status", flows.status, as_json=True)
    beat = next(s for s in json.loads(printed)["services"] if s["name"] == "beat")
    assert out.exit_code == 1 and (beat["state"], beat["restarts"]) == ("restarting", 7)


def test_status_with_ssh_refused_shows_what_the_api_alone_knows_and_exits_2(stack):
    if stack.swarm is None:
        stack.world.connector = Unreachable()
    else:
        stack.swarm.unreachable.add(NODES[0])
    out, screen = run(stack.world, "status", flows.status)
    assert out.exit_code == 2
    assert "stackdeploy: UNKNOWN" in screen and "SSH to stackdeploy-1" in screen
    assert re.search(r"^droplet +stackdeploy-1 +\S+ +fra1 +active +disk \? +\(SSH: no answer\)", screen, re.M)
    assert len(re.findall(r"^droplet ", screen, re.M)) == stack.nodes
    assert "service " not in screen and "could not tell" in out.message
    data = json.loads(run(stack.world, "status", flows.status, as_json=True)[1])
    jsonschema.validate(data, SCHEMA)
    assert data["health"] == "unknown" and data["droplets"][0]["reachable"] is False and data["services"] == []


def test_status_with_no_droplet_yet_exits_2_and_says_nothing_is_deployed(world):
    world.cloud.exists = False
    out, printed = run(world, "status", flows.status, as_json=True)
    assert out.exit_code == 2 and "nothing is deployed yet" in out.message
    data = json.loads(printed)
    jsonschema.validate(data, SCHEMA)
    assert data["health"] == "unknown" and data["droplets"] == [] and "no droplet named" in data["errors"][0]


def test_status_with_the_token_refused_keeps_its_exit_code_and_still_prints_its_document(world):
    world.cloud.token_ok = False
    out, printed = run(world, "status", flows.status, as_json=True)
    data = json.loads(printed)
    assert out.exit_code == 3 and data["health"] == "unknown" and "401" in data["errors"][0]


def test_status_notes_a_certificate_it_cannot_read_and_an_expired_one_is_a_problem(world):
    world.cloud.exists = False
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.checks.cert_error = ConnectionRefusedError("port 443 closed")
    out, printed = run(world, "status", flows.status, as_json=True)
    data = json.loads(printed)
    assert out.exit_code == 0 and data["certificate"] is None and "port 443 closed" in data["errors"][0]
    world.checks.cert_error, world.checks.cert_days = None, -3
    out, printed = run(world, "status", flows.status, as_json=True)
    assert out.exit_code == 1 and json.loads(printed)["problems"][-1].startswith("the certificate expired on ")


# -- logs ---------------------------------------------------------------------------------------------

def test_logs_interleave_the_services_in_time_with_a_name_prefix(stack):
    engine = stack.engine()
    for k in range(3):       # Compose prints a backlog service by service: the view puts them in time order
        engine.log("api", f"api line {k}")
        engine.log("worker", f"worker line {k}")
    out, printed = run(stack.world, "logs", flows.logs, services=["api", "worker"])
    assert out.exit_code == 0, out.message
    lines = [line for line in printed.splitlines() if " line " in line]
    assert [line.split(" | ")[1] for line in lines] == [f"{s} line {k}" for k in range(3) for s in ("api", "worker")]
    times = [line.split()[0] for line in printed.splitlines()]
    assert times == sorted(times) and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t) for t in times)
    prefix = "api" if stack.nodes == 1 else "api@stackdeploy-1"
    assert any(line.split(" ", 1)[1].startswith(prefix) for line in lines)
    assert "\x1b[" not in printed                 # not a terminal: no colour
    assert out.manifest["details"]["logs"]["services"] == ["api", "worker"]
    assert not any("line 0" in p.read_text() for p in out.run.folder.rglob("*") if p.is_file())   # lines not kept


def test_logs_of_a_service_come_from_each_node_it_runs_on(stack):
    for name in NODES[:stack.nodes]:
        stack.engine(name).log("api", f"hello from {name}")
    out, printed = run(stack.world, "logs", flows.logs, services=["api"])
    assert out.exit_code == 0, out.message
    for name in NODES[:stack.nodes]:
        assert f"hello from {name}" in printed
        if stack.swarm:
            assert re.search(rf" api@{re.escape(name)} +\| hello from {re.escape(name)}$", printed, re.M)


def test_a_secret_a_service_prints_never_reaches_the_terminal_or_the_run_folder(stack):
    secret = dict(_session_secrets())["POSTGRES_PASSWORD"]
    stack.engine().log("django", f"connecting with password {secret} to postgres")
    stack.engine().log("django", f"DJANGO_SECRET_KEY={dict(_session_secrets())['DJANGO_SECRET_KEY']}")
    out, printed = run(stack.world, "logs", flows.logs, services=["django"], grep="password|SECRET")
    assert out.exit_code == 0, out.message
    assert "connecting with password ***REDACTED*** to postgres" in printed
    assert "DJANGO_SECRET_KEY=***REDACTED***" in printed
    assert secret not in printed + out.message
    assert not any(secret in p.read_text() for p in out.run.folder.rglob("*") if p.is_file())


def test_grep_filters_lines_and_tail_and_since_reach_the_command(stack):
    stack.engine().log("api", "GET /api/health 200")
    stack.engine().log("api", "ERROR boom")
    out, printed = run(stack.world, "logs", flows.logs, services=["api"], grep="ERROR", since="10m", tail="50")
    assert out.exit_code == 0, out.message
    assert [line.split(" | ")[1] for line in printed.splitlines()] == ["ERROR boom"]
    command = next(c for d in stack.world.droplets for c, _ in d.streamed)
    assert "--since 10m --tail 50" in command


def test_logs_follow_streams_on_a_pty_until_ctrl_c_which_ends_it_cleanly(stack):
    stack.engine().log("api", "before following")
    out, printed = run(stack.world, "logs", flows.logs, services=["api"], follow=True)
    assert out.exit_code == 0, out.message
    assert "before following" in printed
    command, pty = next(s for d in stack.world.droplets for s in d.streamed)
    assert pty and "--follow" in command and "--tail 100" in command
    assert "followed until Ctrl-C" in out.step("logs")["message"]


def test_logs_without_a_service_show_every_service_with_a_container(stack):
    out, printed = run(stack.world, "logs", flows.logs)
    assert out.exit_code == 0, out.message
    shown = {line.split()[1].split("@")[0] for line in printed.splitlines()}
    assert {"traefik", "api", "django", "worker", "postgres"} <= shown


@pytest.mark.parametrize("kwargs, message", [
    ({"services": ["nginx"]}, "nginx is not a service of the stack"),
    ({"services": ["api", "nginx", "mysql"]}, "nginx, mysql are not services of the stack"),
    ({"since": "yesterday"}, "--since 'yesterday' is not a duration or a time"),
    ({"tail": "-5"}, "--tail '-5' is not a whole number of lines"),
    ({"grep": "(unclosed"}, "--grep '(unclosed' is not a regular expression"),
])
def test_bad_logs_inputs_exit_2_before_anything_is_asked_of_the_cloud(world, kwargs, message):
    out, _ = run(world, "logs", flows.logs, **kwargs)
    assert out.exit_code == 2 and message in out.message
    assert world.cloud.calls == [] and world.droplets == []
    if "services" in kwargs:
        assert "name one of: traefik, frontend, api, django, worker, beat, flower, redis, postgres" in out.message


def test_logs_of_a_named_service_with_no_running_container_exit_2_naming_its_state(stack):
    stack.stop("worker")
    out, printed = run(stack.world, "logs", flows.logs, services=["worker"])
    assert out.exit_code == 2 and printed == ""
    assert re.search(r"worker has no running container \(it is (exited \(exit 1\)|failed)", out.message)
    assert "inv up" in out.message and "inv status" in out.message


def test_logs_with_no_droplet_yet_exit_2(world):
    world.cloud.exists = False
    out, _ = run(world, "logs", flows.logs, services=["api"])
    assert out.exit_code == 2 and "nothing is deployed yet" in out.message


# -- exec, manage, shell ------------------------------------------------------------------------------

def test_exec_runs_in_a_running_container_and_passes_the_exit_status_on(stack, capsys):
    out, _ = run(stack.world, "exec", flows.exec_in, service="api", argv=["python", "-c", "print(1)"])
    assert out.exit_code == 0, out.message
    assert "ran python -c print(1)" in capsys.readouterr().out
    command, pty = next(a for d in stack.world.droplets for a in d.attached)
    assert command.startswith("docker exec -i ") and not pty
    assert stack.engine().ran[-1] == ["python", "-c", "print(1)"]

    stack.engine().answer = lambda argv: (3, "it failed\n")
    out, _ = run(stack.world, "exec", flows.exec_in, service="api", argv=["false"])
    assert out.exit_code == 3 and "exited with status 3" in out.message
    assert (out.manifest["outcome"], out.manifest["exit_code"], out.manifest["details"]["exit_status"]) == (
        "failed", 3, 3)


def test_exec_with_a_terminal_gets_a_tty_on_both_ends(stack):
    out, _ = run(stack.world, "exec", flows.exec_in, service="django", argv=["bash"], tty=True)
    assert out.exit_code == 0, out.message
    command, pty = next(a for d in stack.world.droplets for a in d.attached)
    assert pty and command.startswith("docker exec -it ")


def test_on_a_swarm_exec_goes_to_the_node_that_runs_the_service(world, docr):
    world.cloud.exists = False
    swarm = use_swarm(world, docr, nodes=3)
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    elsewhere, node = "flower", NODES[2]           # its one task, moved to node 3 (Swarm may place it anywhere)
    [task] = [t for t in swarm.tasks if t.service == "stackdeploy_flower" and t.desired == "Running"]
    task.node = swarm.node_named(node).id
    since = len(world.droplets)
    out, _ = run(world, "exec", flows.exec_in, service=elsewhere, argv=["env"])
    assert out.exit_code == 0, out.message
    assert swarm.engine(node).ran[-1] == ["env"]
    sent = Stack(world, swarm).commands_since(since)
    assert any(c.startswith("docker exec -i stackdeploy_" + elsewhere) for c in sent[node])


@pytest.mark.parametrize("service, argv, message", [
    ("nginx", ["ls"], "nginx is not a service of the stack"),
    ("api", [], "no command given"),
])
def test_bad_exec_inputs_exit_2(world, service, argv, message):
    out, _ = run(world, "exec", flows.exec_in, service=service, argv=argv)
    assert out.exit_code == 2 and message in out.message and world.cloud.calls == []


def test_exec_into_a_service_with_no_running_container_exits_2(stack):
    stack.stop("worker")
    out, _ = run(stack.world, "exec", flows.exec_in, service="worker", argv=["ls"])
    assert out.exit_code == 2 and "worker has no running container" in out.message
    assert not any(d.attached for d in stack.world.droplets)


def test_manage_runs_a_one_off_of_the_live_django_and_passes_its_status_on(stack, capsys):
    out, _ = run(stack.world, "manage", flows.manage, argv=["showmigrations"])
    assert out.exit_code == 0, out.message
    assert "ran python manage.py showmigrations" in capsys.readouterr().out
    assert stack.engine().ran[-1] == ["python", "manage.py", "showmigrations"]
    command, pty = next(a for d in stack.world.droplets for a in d.attached)
    if stack.swarm is None:
        assert " run --rm --no-deps -T django python manage.py showmigrations" in command
    else:     # the live task spec's image and env, on the stack's network, env through a file removed after
        assert "docker run --rm -i --network" in command and "--env-file" in command and "trap 'rm -f" in command
        assert "stackdeploy_django" in command
    stack.engine().answer = lambda argv: (2, "CommandError: Unknown command\n")
    out, _ = run(stack.world, "manage", flows.manage, argv=["nosuchcommand"])
    assert out.exit_code == 2 and "exited with status 2" in out.message


def test_shell_opens_djangos_shell_with_a_terminal(stack):
    out, _ = run(stack.world, "shell", flows.django_shell, tty=True)
    assert out.exit_code == 0, out.message
    command, pty = next(a for d in stack.world.droplets for a in d.attached)
    assert pty and command.endswith("python manage.py shell") and " -T " not in command
    assert stack.engine().ran[-1] == ["python", "manage.py", "shell"]


def test_manage_without_arguments_and_with_nothing_live_exit_2(world):
    out, _ = run(world, "manage", flows.manage, argv=[])
    assert out.exit_code == 2 and "inv manage -- showmigrations" in out.message
    world.cloud.exists = True        # a droplet, but no release ever went live
    out, _ = run(world, "manage", flows.manage, argv=["showmigrations"])
    assert out.exit_code == 2 and "nothing is live yet" in out.message
