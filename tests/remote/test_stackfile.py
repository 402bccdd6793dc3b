"""The Swarm stack file, built from the real normalized compose model of stack/compose.yml and
checked by the real loaders: Docker 20.10's (the droplets' CLI), the host CLI's `docker stack
config`, and the compose spec schema."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lab.stackenv import format_env, lab_values, parse_example
from remote import edge_config
from remote.stackfile import dump, swarm_stack
from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "stack"
VENV_BIN = REPO / ".venv" / "bin"
DEBIAN_DOCKER = "/usr/bin/docker"  # Debian's docker.io CLI: the droplets' 20.10
NODES = 3
REPLICATED = {"frontend", "api", "django", "worker"}
DATA = {"postgres", "redis"}


def _ref(service: str) -> str:
    return f"10.110.0.2:5000/stackdeploy-{service}:20261127T0300"


BASE = "/opt/stackdeploy"


def _compose_argv() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    need((VENV_BIN / "docker-compose").exists(), "docker compose")
    return [str(VENV_BIN / "docker-compose")]


@pytest.fixture(scope="module")
def env_values() -> dict[str, str]:
    """The lab's stack variables: generated secrets and bcrypt htpasswd lines (with `$`)."""
    example = parse_example((STACK / ".env.example").read_text())
    values = lab_values(example, "stack.test", "203.0.113.7", {}, "a dashboard password")
    # A secret with `$` in it (a generated one has none): compose and the stack loader must keep it.
    return {**values, "DJANGO_SECRET_KEY": values["DJANGO_SECRET_KEY"] + "$x$$y",
            edge_config.DIR_VAR: edge_config.folder(BASE)}


@pytest.fixture(scope="module")
def config(env_values, tmp_path_factory) -> dict:
    """What the droplet produces: `docker compose config --format json` with a real .env."""
    env_file = tmp_path_factory.mktemp("stackenv") / ".env"
    env_file.write_text(format_env(env_values))
    env = {k: v for k, v in os.environ.items() if k not in env_values}
    result = subprocess.run([*_compose_argv(), "-p", "stackdeploy", "--env-file", str(env_file),
                             "-f", str(STACK / "compose.yml"), "config", "--format", "json"],
                            capture_output=True, text=True, timeout=120, env=env, cwd=STACK)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def images(config) -> dict[str, str]:
    return {name: _ref(name) for name, d in config["services"].items() if d.get("build")}


@pytest.fixture(scope="module")
def stack(config, images) -> dict:
    return swarm_stack(config, images, nodes=NODES)


@pytest.fixture
def stack_file(stack, tmp_path) -> Path:
    path = tmp_path / "stack.yml"
    path.write_text(dump(stack))
    return path


def _load_with_docker_20_10(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`docker stack deploy` of Docker 20.10 loads and validates the file before it contacts the
    daemon; pointed at a socket that does not exist, it can never deploy anything."""
    version = subprocess.run([DEBIAN_DOCKER, "--version"], capture_output=True, text=True) \
        if os.path.exists(DEBIAN_DOCKER) else None
    need(version is not None and "version 20.10" in version.stdout,
         "Debian's docker.io (the Docker 20.10 CLI, at /usr/bin/docker)")
    (tmp_path / "docker-config").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=f"unix://{tmp_path}/no-daemon.sock", DOCKER_CONFIG=str(tmp_path / "docker-config"))
    return subprocess.run([DEBIAN_DOCKER, "stack", "deploy", "--resolve-image", "never", "-c", str(path), "probe"],
                          capture_output=True, text=True, timeout=60, env=env)


# --- the real loaders accept it ----------------------------------------------------------

def test_docker_20_10_stack_loader_accepts_it_without_warnings(stack_file, tmp_path):
    result = _load_with_docker_20_10(stack_file, tmp_path)
    output = result.stdout + result.stderr
    # Loading passed when the only complaint is the missing daemon.
    assert "Cannot connect to the Docker daemon" in output, output
    for word in ("unsupported", "Ignoring", "deprecated", "Additional property"):
        assert word not in output, output


def test_docker_20_10_probe_rejects_the_compose_model_as_is(config, tmp_path):
    # The probe above can fail: the same loader refuses compose's own model (mem_limit,
    # depends_on with conditions) and warns about what it would ignore (build, restart).
    raw = {"version": "3.9", **{k: config[k] for k in ("services", "networks", "volumes")}}
    path = tmp_path / "raw.yml"
    path.write_text(yaml.safe_dump(raw))
    result = _load_with_docker_20_10(path, tmp_path)
    output = result.stdout + result.stderr
    assert "Cannot connect to the Docker daemon" not in output
    assert "depends_on must be a list" in output or "mem_limit" in output, output


def test_docker_stack_config_accepts_it_and_restores_every_dollar(stack_file, env_values):
    need(shutil.which("docker") is not None, "the docker CLI")
    result = subprocess.run(["docker", "stack", "config", "-c", str(stack_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = yaml.safe_load(result.stdout)
    django_env = loaded["services"]["django"]["environment"]
    # compose printed `$` as `$$`; the stack loader interpolates once more: the key arrives whole.
    assert django_env["DJANGO_SECRET_KEY"] == env_values["DJANGO_SECRET_KEY"]
    # the shell's own `$`, escaped as `$$` in compose.yml, arrive as one `$` (the password is in a file)
    assert 'REDISCLI_AUTH="$(sed -n "s/^requirepass //p" /tmp/redis.conf' in loaded["services"]["redis"]["healthcheck"]["test"][1]
    assert '[ -s "$f" ]' in " ".join(loaded["services"]["redis"]["command"])
    assert loaded["services"]["api"]["deploy"]["resources"]["limits"] == {"memory": str(384 * 2**20), "pids": 100}


def test_compose_spec_schema_accepts_it(stack_file):
    result = subprocess.run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                             str(stack_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dump_round_trips(stack):
    text = dump(stack)
    assert text.startswith("version: '3.9'\n")
    assert yaml.safe_load(text) == stack


# --- what a user of the cluster notices --------------------------------------------------

def test_compose_only_keys_are_gone(stack):
    for name, service in stack["services"].items():
        left = {"build", "container_name", "restart", "depends_on", "pull_policy", "profiles",
                "mem_limit", "pids_limit", "tmpfs", "shm_size", "security_opt"} & set(service)
        assert not left, f"{name} keeps {left}"
    assert "name" not in stack
    assert [k for k in stack if k.startswith("x-")] == ["x-release-migrate"]


def test_every_built_service_runs_its_registry_ref(stack, config):
    for name, service in stack["services"].items():
        if config["services"][name].get("build"):
            assert service["image"] == _ref(name)
    assert stack["services"]["redis"]["image"] == config["services"]["redis"]["image"] == "redis:7-bookworm"


def test_every_service_resolves_by_dns_round_robin(stack):
    # No IPVS on these kernels: a virtual IP would not route.
    assert {s["deploy"]["endpoint_mode"] for s in stack["services"].values()} == {"dnsrr"}


def test_only_traefik_publishes_in_host_mode_on_its_manager(stack):
    published = {n for n, s in stack["services"].items() if s.get("ports")}
    assert published == {"traefik"}
    traefik = stack["services"]["traefik"]
    assert traefik["ports"] == [{"target": 80, "published": 80, "protocol": "tcp", "mode": "host"},
                                {"target": 443, "published": 443, "protocol": "tcp", "mode": "host"}]
    assert traefik["deploy"]["placement"]["constraints"] == ["node.role == manager",
                                                             "node.labels.stackdeploy.edge == true"]
    assert traefik["deploy"]["replicas"] == 1
    # Two tasks cannot hold the same host ports on one node: stop-first.
    assert traefik["deploy"]["update_config"]["order"] == "stop-first"


@pytest.mark.parametrize("name", sorted(DATA))
def test_databases_stay_with_their_volume(stack, name):
    deploy = stack["services"][name]["deploy"]
    assert deploy["replicas"] == 1
    assert deploy["placement"]["constraints"] == ["node.labels.stackdeploy.data == true"]
    assert deploy["update_config"]["order"] == deploy["rollback_config"]["order"] == "stop-first"


def test_data_node_label_is_the_callers(config, images):
    stack = swarm_stack(config, images, nodes=2, data_node_label="role.db", edge_node_label="role.edge")
    assert stack["services"]["postgres"]["deploy"]["placement"]["constraints"] == ["node.labels.role.db == true"]
    assert "node.labels.role.edge == true" in stack["services"]["traefik"]["deploy"]["placement"]["constraints"]


def test_beat_is_a_singleton_that_never_overlaps(stack):
    deploy = stack["services"]["beat"]["deploy"]
    assert deploy["replicas"] == 1
    assert deploy["update_config"]["order"] == deploy["rollback_config"]["order"] == "stop-first"


@pytest.mark.parametrize("name", sorted(REPLICATED))
def test_stateless_services_run_per_node_and_roll_start_first(stack, name):
    deploy = stack["services"][name]["deploy"]
    assert deploy["replicas"] == NODES
    assert "placement" not in deploy
    assert deploy["update_config"] == {"order": "start-first", "failure_action": "rollback", "monitor": "10s",
                                       "parallelism": 1, "delay": "0s"}
    assert deploy["rollback_config"] == {"order": "start-first", "parallelism": 1}
    assert deploy["restart_policy"]["condition"] == "any"


def test_replicas_follow_the_node_count(config, images):
    stack = swarm_stack(config, images, nodes=2)
    assert {n: s["deploy"]["replicas"] for n, s in stack["services"].items()} == {
        "frontend": 2, "api": 2, "django": 2, "worker": 2,
        "flower": 1, "beat": 1, "postgres": 1, "redis": 1, "traefik": 1}


def test_health_env_and_hardening_carry_over(stack, config):
    for name, service in stack["services"].items():
        source = config["services"][name]
        assert service["healthcheck"] == source["healthcheck"], name  # what gates every update
        assert service.get("environment") == source.get("environment"), name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["logging"] == source["logging"], name
    assert stack["services"]["worker"]["stop_grace_period"] == config["services"]["worker"]["stop_grace_period"]
    assert stack["services"]["frontend"]["stop_signal"] == "SIGQUIT"
    assert stack["services"]["traefik"]["sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "80"}


def test_memory_and_pids_limits_become_deploy_limits(stack, config):
    for name, service in stack["services"].items():
        source = config["services"][name]
        assert service["deploy"]["resources"]["limits"] == {
            "memory": str(source["mem_limit"]), "pids": source["pids_limit"]}, name
    assert stack["services"]["django"]["deploy"]["resources"]["limits"]["memory"] == str(512 * 2**20)


def test_tmpfs_and_shm_become_tmpfs_mounts(stack):
    postgres = stack["services"]["postgres"]["volumes"]
    assert {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 16 * 2**20}} in postgres
    assert {"type": "tmpfs", "target": "/var/run/postgresql", "tmpfs": {"size": 2**20}} in postgres
    assert {"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": 128 * 2**20}} in postgres
    assert {"type": "volume", "source": "pg-data", "target": "/var/lib/postgresql/data"} in postgres
    traefik = stack["services"]["traefik"]["volumes"]
    assert {"type": "volume", "source": "traefik-acme", "target": "/letsencrypt"} in traefik
    binds = {v["target"]: (v["source"], v.get("read_only")) for v in traefik if v["type"] == "bind"}
    assert binds["/etc/traefik/traefik.yml"][1] and binds["/etc/traefik/ca"][1]
    # Its live routes and users: the folder outside every release the deployer fills on the edge node.
    assert binds[edge_config.MOUNT] == (edge_config.folder(BASE), True)
    assert set(binds) == {"/etc/traefik/traefik.yml", edge_config.MOUNT, "/etc/traefik/ca"}


def test_networks_are_overlay_and_the_back_end_stays_internal(stack):
    networks = stack["networks"]
    assert {n["driver"] for n in networks.values()} == {"overlay"}
    assert networks["internal"]["internal"] is True and networks["dashboards"]["internal"] is True
    assert "internal" not in networks["edge"]  # the only network with egress
    assert stack["services"]["traefik"]["networks"] == ["dashboards", "edge"]


def test_volumes_keep_the_single_node_names(stack):
    # The data node mounts the very volume the compose deploy of project `stackdeploy` filled.
    assert stack["volumes"]["pg-data"] == {"driver": "local", "name": "stackdeploy_pg-data"}


# --- what the caller gets wrong ----------------------------------------------------------

def test_a_built_service_without_a_ref_is_refused(config, images):
    partial = {k: v for k, v in images.items() if k not in ("beat", "worker")}
    with pytest.raises(ValueError, match=r"no registry image ref for built service\(s\) beat, worker"):
        swarm_stack(config, partial, nodes=NODES)


def test_a_ref_for_an_unknown_service_is_refused(config, images):
    with pytest.raises(ValueError, match="does not have: djnago"):
        swarm_stack(config, {**images, "djnago": _ref("django")}, nodes=NODES)


def test_a_service_without_a_placement_rule_is_refused(config, images):
    bigger = copy.deepcopy(config)
    bigger["services"]["mailer"] = {"image": "mailer:1"}
    with pytest.raises(ValueError, match="'mailer' has no Swarm placement rule"):
        swarm_stack(bigger, images, nodes=NODES)


def test_start_first_on_a_singleton_is_refused(config, images):
    # compose.yml marking beat start-first would overlap two beats on every update.
    changed = copy.deepcopy(config)
    changed["services"]["beat"]["deploy"] = {"update_config": {"order": "start-first"}}
    with pytest.raises(ValueError, match="'beat': compose declares update order start-first"):
        swarm_stack(changed, images, nodes=NODES)


@pytest.mark.parametrize("key, value, message", [
    ("tmpfs", ["/tmp:size=16m,mode=0700"], "tmpfs option 'mode=0700'"),
    ("security_opt", ["seccomp=unconfined"], "security_opt seccomp=unconfined cannot be set"),
    ("privileged", True, "privileged has no Swarm equivalent"),
])
def test_what_swarm_would_silently_weaken_is_refused(config, images, key, value, message):
    changed = copy.deepcopy(config)
    changed["services"]["api"][key] = value
    with pytest.raises(ValueError, match=message):
        swarm_stack(changed, images, nodes=NODES)


def test_the_input_is_not_changed(config, images):
    before = copy.deepcopy(config)
    swarm_stack(config, images, nodes=NODES)
    assert config == before
