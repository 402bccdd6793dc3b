"""The day-2 commands against the real Docker engine through the sshd (busybox images, one small
Compose project): the status probe read back, `compose logs` parsed and followed, a one-off and
an exec passing their exit status on. The Swarm's commands are pure-tested below with docker's
own output shapes: the shared engine of this machine must not be turned into a swarm."""
from __future__ import annotations

import io
import json
import subprocess
import threading
import time

import pytest

from remote import logs, oneoff, status
from remote.compose import ComposeSpec
from remote.layout import ReleaseLayout
from tests.remote.test_compose import busybox_image, project  # noqa: F401 - fixtures

COMPOSE = """\
services:
  web:
    image: {image}
    command: ["/bin/sh", "-c", "echo web-started; echo web-err >&2; exec sleep 100000"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
      retries: 2
  job:
    image: {image}
    command: ["/bin/sh", "-c", "echo job-done; exit 3"]
  never:
    image: {image}
    profiles: ["off"]
"""


@pytest.fixture
def live(host, base, busybox_image, project):  # noqa: F811 - pytest fixtures
    """A live release of a two-service project started under `base`/current, as a deploy leaves it."""
    layout = ReleaseLayout(base)
    release = f"{base}/releases/r1"
    host.run(f"mkdir -p {release} && ln -sfn releases/r1 {base}/current")
    host.put(f"{release}/compose.yml", COMPOSE.format(image=busybox_image).encode())
    host.put(f"{release}/compose.release.yml", b"services: {}\n")
    host.put(f"{release}/.env", b"APP=1\n", mode=0o600)
    host.put(f"{release}/.release.json", json.dumps({"id": "r1", "created": "2026-01-01T00:00:00+00:00",
                                                      "outcome": "success", "by": "ops@laptop",
                                                      "manifest": {"a": {}}}).encode())
    t = ComposeSpec(project=project).on(layout)
    from remote import commands as cmd
    host.run(cmd.compose(t.project, t.compose_files, t.env_file, "up", "-d", "web", "job",
                         project_directory=t.project_directory), timeout=120)
    deadline = time.monotonic() + 30
    while "healthy" not in host.run(f"docker inspect --format '{{{{.State.Health.Status}}}}' {project}-web-1").stdout:
        assert time.monotonic() < deadline, "web never became healthy"
        time.sleep(0.5)
    return layout, t


def test_the_status_probe_reads_the_release_each_service_and_the_disk_in_one_command(host, live, project, commands_run):
    layout, _ = live
    before = len(commands_run)
    snap = status.parse_compose(host.run(status.compose_probe(layout, project)).stdout, project, "droplet-1")
    assert len(commands_run) == before + 1
    assert snap.release == "r1" and snap.release_meta == {"id": "r1", "created": "2026-01-01T00:00:00+00:00",
                                                          "outcome": "success", "by": "ops@laptop"}
    assert [s.name for s in snap.services] == ["web", "job", "never"]      # the compose file's order
    web, job, never = snap.services
    assert (web.state, web.health, web.problem, web.nodes) == ("running", "healthy", None, ["droplet-1"])
    assert 0 <= web.uptime_s < 120 and web.image.startswith("sdtest-busybox:")
    assert web.running[0].container == f"{project}-web-1"
    assert (job.state, job.problem) == ("exited", "exited (exit 3)")
    assert (never.state, never.problem) == ("missing", "no container")
    assert snap.disk is not None and 0 < snap.disk.free_kb <= snap.disk.total_kb
    assert snap.now and abs(snap.now - time.time()) < 60
    assert snap.last_backup is None and snap.errors == ()
    assert snap.problems() == ["job: exited (exit 3)", "never: no container"]
    assert snap.exec_target("web", "droplet-1").container == f"{project}-web-1"
    assert snap.exec_target("job", "droplet-1") is None


def test_the_probe_of_a_droplet_with_nothing_live_says_so(host, base, project):
    snap = status.parse_compose(host.run(status.compose_probe(ReleaseLayout(base), project)).stdout, project, "d")
    assert snap.release is None and snap.services == () and snap.problems() == [
        "nothing is live (no release started yet)"]


def test_compose_logs_parse_into_service_time_and_text_and_follow_shows_new_lines(host, live, project):
    _, t = live
    seen: list[str] = []
    host.stream(logs.compose_command(t, logs.LogRequest(("web", "job"), tail=10)), seen.append)
    parsed = [logs.parse_line(line, project, ["web", "job"]) for line in seen]
    assert None not in parsed
    assert {(p.service, p.text) for p in parsed} == {("web", "web-started"), ("web", "web-err"), ("job", "job-done")}
    assert all(p.time.endswith("Z") and len(p.time) == 30 for p in parsed)   # nanoseconds padded: sortable

    followed: list[str] = []
    arrived = threading.Event()

    def on_line(line: str) -> None:
        followed.append(line)
        if "new-line" in line:
            arrived.set()
            raise KeyboardInterrupt      # what Ctrl-C does
    request = logs.LogRequest(("web",), follow=True, tail=0)
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            host.stream(logs.compose_command(t, request), on_line, pty=True)
        except BaseException as exc:  # noqa: BLE001 - the interrupt is the expected end
            errors.append(exc)
    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(1.5)
    subprocess.run(["docker", "exec", f"{project}-web-1", "sh", "-c", "echo new-line > /proc/1/fd/1"], check=True)
    assert arrived.wait(15), followed
    reader.join(10)
    assert [logs.parse_line(line, project, ["web"]).text for line in followed] == ["new-line"]
    assert isinstance(errors[0], KeyboardInterrupt)


def test_a_one_off_and_an_exec_pass_their_exit_status_on(host, live, project):
    _, t = live
    out = io.StringIO()
    code = host.interactive(oneoff.compose_one_off(t, "web", ["sh", "-c", "echo one-off; exit 4"], tty=False),
                            pty=False, stdin=io.StringIO(""), stdout=out, stderr=io.StringIO())
    assert code == 4 and "one-off" in out.getvalue()
    assert project + "-web-run" not in host.run("docker ps -a --format '{{.Names}}'").stdout   # removed after
    out = io.StringIO()
    code = host.interactive(oneoff.exec_in(f"{project}-web-1", ["sh", "-c", "cat; exit 5"], tty=False), pty=False,
                            stdin=io.StringIO("from stdin\n"), stdout=out, stderr=io.StringIO())
    assert code == 5 and out.getvalue() == "from stdin\n"


# -- the Swarm's side, from docker's output shapes --------------------------------------------------

SWARM_OUTPUT = "\n".join([
    status.SECTION + "now", "1700000000",
    status.SECTION + "current", "/opt/app/releases/r7",
    status.SECTION + "meta", json.dumps({"id": "r7", "outcome": "success", "outcome_at": "2023-11-14T20:00:00+00:00"}),
    status.SECTION + "compose", "services:\n  api: {}\n  beat: {}\n",
    status.SECTION + "disk", "/dev/vda1 50000 20000 30000 40% /",
    status.SECTION + "backup",
    status.SECTION + "nodes",
    json.dumps({"Hostname": "app-1", "Status": "Ready", "Availability": "Active", "ManagerStatus": "Leader"}),
    json.dumps({"Hostname": "app-2", "Status": "Down", "Availability": "Active", "ManagerStatus": ""}),
    status.SECTION + "services",
    json.dumps({"Name": "app_api", "Replicas": "1/2", "Image": "reg/app/api:r7"}),
    json.dumps({"Name": "app_beat", "Replicas": "1/1 (max 1 per node)", "Image": "reg/app/beat:r7"}),
    status.SECTION + "tasks",
    json.dumps({"ID": "t1", "Name": "app_api.1", "Image": "reg/app/api:r7@sha256:ab", "Node": "app-1",
                "DesiredState": "Running", "CurrentState": "Running 2 hours ago", "Error": ""}),
    json.dumps({"ID": "t0", "Name": "\\_ app_api.1", "Image": "reg/app/api:r6", "Node": "app-1",
                "DesiredState": "Shutdown", "CurrentState": "Failed 3 hours ago", "Error": "task: non-zero exit (1)"}),
    json.dumps({"ID": "t2", "Name": "app_api.2", "Image": "reg/app/api:r7", "Node": "app-2",
                "DesiredState": "Running", "CurrentState": "Pending 5 minutes ago", "Error": "no suitable node"}),
    json.dumps({"ID": "t3", "Name": "app_beat.1", "Image": "reg/app/beat:r7", "Node": "app-1",
                "DesiredState": "Running", "CurrentState": "Running about an hour ago", "Error": ""}),
])


def test_the_swarm_probe_reads_replicas_tasks_failures_and_nodes():
    snap = status.parse_swarm(SWARM_OUTPUT, "app")
    api, beat = snap.services
    assert (api.state, api.desired, len(api.running), api.restarts, api.uptime_s) == ("degraded", 2, 1, 1, 7200)
    assert api.image == "reg/app/api:r7" and api.nodes == ["app-1"]
    assert (beat.state, beat.problem, beat.uptime_s) == ("running", None, 3600)
    assert snap.exec_target("api", "app-2").container == "app_api.1.t1"
    assert snap.problems() == ["node app-2 is down", "api: 1 of 2 running"]
    assert snap.disk == status.Disk(total_kb=50000, free_kb=30000) and snap.release == "r7"


def test_swarm_log_lines_parse_with_the_time_on_either_side():
    for line in ("2026-12-06T13:22:15.231406345Z app_api.1@app-2    | GET /health 200",
                 "app_api.1@app-2    | 2026-12-06T13:22:15.231406345Z GET /health 200"):
        assert logs.parse_line(line, "app", ["api"]) == logs.LogLine("api", "app-2", "2026-12-06T13:22:15.231406345Z",
                                                                      "GET /health 200")
    assert logs.parse_line("Error response from daemon: no such service", "app", ["api"]) is None
    assert logs.swarm_command("app", logs.LogRequest(("api", "beat"), follow=True, since="10m")) == (
        "docker service logs --no-task-ids --timestamps --since 10m --follow app_api & "
        "docker service logs --no-task-ids --timestamps --since 10m --follow app_beat & wait")


def test_docker_human_durations():
    assert [status.docker_ago(t) for t in ("Less than a second ago", "About a minute ago", "an hour ago",
                                          "3 days ago", "nonsense")] == [0, 60, 3600, 3 * 86400, None]
