"""A Docker Swarm formed over three real lab droplets' VPC: managers and workers, the data node's
label, a rerun that changes nothing, join tokens kept out of everything written, and an overlay
network that carries traffic between tasks on different nodes (dnsrr: this kernel has no IPVS)."""
from __future__ import annotations

import ipaddress
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from deploy import hostkey
from deploy.cloud.user_data import build_user_data
from deploy.redact import SecretRegistry
from lab import config as labconfig
from lab import control, state
from lab.droplets import ContainerBackend
from lab.ports import free_port
from remote import cloudinit, swarm
from remote.connection import SshEndpoint, connector, host_entry
from remote.layout import ReleaseLayout
from remote.host import Host

from .conftest import TEST_PRELOAD, free_subnet

pytestmark = [pytest.mark.docker, pytest.mark.lab]

BASE = "/opt/stackdeploy"
STACK = """\
version: "3.9"
services:
  cache:
    image: redis:7-bookworm
    deploy:
      endpoint_mode: dnsrr
      placement: {constraints: ["node.labels.stackdeploy.data == true"]}
    networks: [mesh]
  client:
    image: redis:7-bookworm
    command: ["sh", "-c", "until redis-cli -h cache set crossed yes; do sleep 1; done; sleep infinity"]
    deploy:
      endpoint_mode: dnsrr
      placement: {constraints: ["node.labels.stackdeploy.data != true"]}
    networks: [mesh]
networks:
  mesh: {driver: overlay}
"""


class Cluster:
    """Three brand-new droplets on one lab VPC (cloud-init installs Docker on each: ~1 min, in parallel)."""

    def __init__(self, tmp, images) -> None:
        self.cfg = labconfig.LabConfig(name=f"labtest-{uuid.uuid4().hex[:8]}", subnet=free_subnet(),
                                       api_port=free_port(), state_dir=tmp / ".lab", preload=TEST_PRELOAD)
        self.key = state.ensure_keypair(tmp / "keys")
        self.known_hosts = tmp / "known_hosts"
        self.backend = ContainerBackend(self.cfg, log=lambda m: None)
        pub = self.key.with_suffix(".pub").read_text()
        vpc = list(ipaddress.ip_network(self.cfg.vpc).hosts())
        specs = [(201 + i, f"node-{i + 1}", str(vpc[i + 1])) for i in range(3)]

        def make(spec):
            did, name, private = spec
            host_key = hostkey.generate(SecretRegistry())
            ip = self.backend.create(did, name, [pub], build_user_data("deploy", pub, host_key, BASE), ["swarm"],
                                     private_ip=private)
            return did, name, private, ip, host_key

        with ThreadPoolExecutor(3) as pool:
            made = list(pool.map(make, specs))
        self.nodes: list[swarm.Member] = []
        self.ids: dict[str, int] = {}
        for did, name, private, ip, host_key in made:
            hostkey.pin(self.known_hosts, host_entry(ip, 22), host_key.public)
            ssh = SshEndpoint(host=ip, user="deploy", key_path=self.key, known_hosts_path=self.known_hosts,
                            connect_timeout=10, retries=1, backoff=0.5)
            target = Host(name=name, host=ip, layout=ReleaseLayout(BASE), connector=connector(ssh)).open()
            self.nodes.append(swarm.Member(target, private))
            self.ids[name] = did
        with ThreadPoolExecutor(3) as pool:
            states = list(pool.map(lambda n: cloudinit.wait(n.target, 600), self.nodes))
        assert all(s.state == "done" for s in states), states

    def close(self) -> None:
        for node in self.nodes:
            node.target.close()
        control.down(self.cfg, log=lambda m: None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, images):
    c = Cluster(tmp_path_factory.mktemp("swarm"), images)
    yield c
    c.close()


@pytest.fixture(scope="module")
def formed(cluster):
    registered: list[str] = []
    events: list[str] = []
    result = swarm.form(cluster.nodes, registered.append, events.append)
    return result, registered, events


def test_three_nodes_form_one_swarm_of_three_managers_over_the_vpc(cluster, formed):
    result, _, events = formed
    names = [n.name for n in cluster.nodes]
    assert result.managers == tuple(names) and result.workers == ()       # 3 nodes: 3 managers (Raft quorum)
    assert result.joined == ("node-2", "node-3")
    listed = swarm.json_lines(cluster.nodes[0].target.run(swarm.nodes_command()).stdout)
    assert sorted(n["Hostname"] for n in listed) == names
    assert {n["Status"] for n in listed} == {"Ready"}
    # every node advertises its private address, never the public one
    for node in cluster.nodes:
        addr = cluster.nodes[0].target.run(
            f"docker node inspect {result.node_ids[node.name]} --format '{{{{.Status.Addr}}}}'").stdout.strip()
        assert addr == node.private_ip
    labels = cluster.nodes[0].target.run(
        f"docker node inspect {result.node_ids['node-1']} --format '{{{{json .Spec.Labels}}}}'").stdout
    assert '"stackdeploy.data":"true"' in labels
    assert any("swarm started on node-1" in e for e in events)


def test_join_tokens_are_registered_as_secrets_and_leave_no_file_behind(cluster, formed):
    _, registered, _ = formed
    live = {cluster.nodes[0].target.run(swarm.join_token_command(r)).stdout.strip() for r in ("manager",)}
    assert live <= set(registered) and all(t.startswith("SWMTKN-") for t in registered)
    for node in cluster.nodes[1:]:
        assert node.target.run("ls -a /tmp").stdout.count(".swarm-join-") == 0


def test_forming_again_changes_nothing(cluster, formed):
    first, _, _ = formed
    again = swarm.form(cluster.nodes, lambda _t: None)
    assert again.joined == () and again.node_ids == first.node_ids and again.managers == first.managers


def test_a_node_a_failed_shrink_left_drained_is_made_active_again(cluster, formed):
    """NODES raised back after a shrink that stopped half-way: the node must take tasks again."""
    first, _, _ = formed
    leader = cluster.nodes[0].target
    leader.run(swarm.availability_command(first.node_ids["node-3"], "drain"))
    events: list[str] = []
    swarm.form(cluster.nodes, lambda _t: None, events.append)
    assert "node-3 was drain: active again" in events
    listed = {n["Hostname"]: n for n in swarm.json_lines(leader.run(swarm.nodes_command()).stdout)}
    assert {h: n["Availability"] for h, n in listed.items()} == {"node-1": "Active", "node-2": "Active",
                                                                 "node-3": "Active"}


def test_a_node_of_another_swarm_is_refused_not_moved(cluster, formed, tmp_path):
    outsider = cluster.nodes[2]
    leader = cluster.nodes[0]
    # node-3 leaves and starts a swarm of its own: forming must name it and the fix
    leader.target.run(f"docker node demote {outsider.name}")
    outsider.target.run("docker swarm leave --force")
    deadline = time.monotonic() + 60
    while "Down" not in leader.target.run(f"docker node inspect {outsider.name} --format '{{{{.Status.State}}}}'",
                                          check=False).stdout.title() and time.monotonic() < deadline:
        time.sleep(1)
    leader.target.run(f"docker node rm --force {outsider.name}")
    outsider.target.run(swarm.init_command(outsider.private_ip))
    try:
        with pytest.raises(swarm.RemoteError) as err:
            swarm.form(cluster.nodes, lambda _t: None)
        assert "node-3 belongs to another swarm" in str(err.value) and "docker swarm leave --force" in err.value.hint
    finally:
        outsider.target.run("docker swarm leave --force")
    rejoined = swarm.form(cluster.nodes, lambda _t: None)
    assert rejoined.joined == ("node-3",) and rejoined.managers == tuple(n.name for n in cluster.nodes)


def test_the_overlay_carries_traffic_between_tasks_on_different_nodes(cluster, formed):
    leader = cluster.nodes[0].target
    leader.run("mkdir -p ~/mesh")
    leader.put("/home/deploy/mesh/stack.yml", STACK.encode())
    leader.run("docker stack deploy -c ~/mesh/stack.yml mesh", timeout=120)
    try:
        deadline = time.monotonic() + 180
        value = ""
        while time.monotonic() < deadline:
            value = leader.run("cid=$(docker ps -q -f label=com.docker.swarm.service.name=mesh_cache); "
                               "[ -n \"$cid\" ] && docker exec $cid redis-cli get crossed", check=False).stdout.strip()
            if value == "yes":
                break
            time.sleep(2)
        tasks = swarm.json_lines(leader.run(swarm.tasks_command("mesh")).stdout)
        running = {t["Name"].split(".")[0]: t["Node"] for t in tasks if t["CurrentState"].startswith("Running")}
        assert running["mesh_cache"] == "node-1" and running["mesh_client"] != "node-1", tasks
        assert value == "yes", "the client on another node never reached the cache over the overlay"
    finally:
        leader.run("docker stack rm mesh", check=False)


ROLLING = """\
version: "3.9"
services:
  web:
    image: redis:7-bookworm
    command: ["redis-server", "--port", "{port}"]
    environment: {{RELEASE: "{release}"}}
    healthcheck: {{test: ["CMD", "redis-cli", "ping"], interval: 1s, timeout: 2s, retries: 3}}
    deploy:
      endpoint_mode: dnsrr
      replicas: 3
      update_config: {{order: start-first, parallelism: 1, failure_action: rollback, monitor: 5s}}
      rollback_config: {{order: start-first, parallelism: 1}}
"""


def _roll(leader: Host, release: str, port: int = 6379) -> str:
    since = leader.run(swarm.clock_command()).stdout.strip()
    leader.put("/home/deploy/mesh/rolling.yml", ROLLING.format(port=port, release=release).encode())
    leader.run("docker stack deploy -c ~/mesh/rolling.yml roll", timeout=120)
    return since


def test_a_rolling_update_settles_and_a_failing_one_is_rolled_back_by_swarm_and_named(cluster, formed):
    leader = cluster.nodes[0].target
    leader.run("mkdir -p ~/mesh")
    try:
        states = swarm.wait_rollout(leader, "roll", _roll(leader, "one"), timeout=180)
        assert states["roll_web"].running == states["roll_web"].desired == 3
        states = swarm.wait_rollout(leader, "roll", _roll(leader, "two"), timeout=180)
        assert states["roll_web"].update_state == "completed"
        # The new tasks listen elsewhere, so their healthcheck fails: Swarm must roll back
        with pytest.raises(swarm.RolloutFailed) as err:
            swarm.wait_rollout(leader, "roll", _roll(leader, "three", port=6380), timeout=240)
        assert "roll_web" in str(err.value) and "previous version serves" in str(err.value)
        env = leader.run("docker service inspect roll_web --format '{{json .Spec.TaskTemplate.ContainerSpec.Env}}'").stdout
        assert "RELEASE=two" in env
        running = [t for t in swarm.json_lines(leader.run(
            "docker service ps roll_web --filter desired-state=running --format '{{json .}}'").stdout)]
        assert len(running) == 3 and all(t["CurrentState"].startswith("Running") for t in running)
    finally:
        leader.run("docker stack rm roll", check=False)


SHRINKING = """\
version: "3.9"
services:
  web:
    image: redis:7-bookworm
    healthcheck: {test: ["CMD", "redis-cli", "ping"], interval: 2s, timeout: 2s, retries: 3, start_period: 2s}
    deploy:
      replicas: 3
      endpoint_mode: dnsrr
      update_config: {order: start-first, parallelism: 1, delay: 1s, failure_action: rollback, monitor: 5s}
"""


def _running_tasks(leader: Host, service: str) -> list[dict]:
    return swarm.json_lines(leader.run(f"docker service ps {service} --filter desired-state=running "
                                       "--format '{{json .}}'").stdout)


def test_a_node_leaves_after_its_tasks_moved_start_first_and_growing_again_promotes_managers(cluster, formed):
    """Last in this file: it takes node-3 out of the swarm (and puts it back as a new member)."""
    leader, leaver = cluster.nodes[0].target, cluster.nodes[2]
    leader.run("mkdir -p ~/mesh")
    leader.put("/home/deploy/mesh/shrink.yml", SHRINKING.encode())
    events: list[str] = []
    try:
        since = leader.run(swarm.clock_command()).stdout.strip()
        leader.run("docker stack deploy -c ~/mesh/shrink.yml shrink", timeout=120)
        swarm.wait_rollout(leader, "shrink", since, timeout=180)
        assert "node-3" in {t["Node"] for t in _running_tasks(leader, "shrink_web")}

        # Two nodes want one manager: node-2 and node-3 are demoted (the quorum grew first: no promotion needed)
        two = swarm.form(cluster.nodes[:2], lambda _t: None, events.append)
        assert two.managers == ("node-1",) and two.workers == ("node-2",)
        listed = {n["Hostname"]: n for n in swarm.json_lines(leader.run(swarm.nodes_command()).stdout)}
        assert not listed["node-3"].get("ManagerStatus")

        # Sampled from outside (docker exec) while node-3 is taken out: never fewer than 3 running
        container = cluster.backend.container(cluster.ids["node-1"])
        running: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                out = subprocess.run(["docker", "exec", container, "docker", "service", "ls", "--filter",
                                      "name=shrink_web", "--format", "{{.Replicas}}"],
                                     capture_output=True, text=True).stdout
                if out.strip():
                    running.append(swarm.parse_replicas(out)[0])
                time.sleep(0.3)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            removed = swarm.retire(leader, [swarm.Leaving("node-3", leaver.target)], "shrink", timeout=240,
                                   on_event=events.append)
        finally:
            done.set()
            sampler.join(10)
        assert removed == ["node-3"]
        assert any("starting shrink_web elsewhere before node-3" in e for e in events), events
        assert len(running) > 10 and min(running) >= 3, running
        hosts = sorted(n["Hostname"] for n in swarm.json_lines(leader.run(swarm.nodes_command()).stdout))
        assert hosts == ["node-1", "node-2"]
        tasks = _running_tasks(leader, "shrink_web")
        assert len(tasks) == 3 and {t["Node"] for t in tasks} <= {"node-1", "node-2"}
        assert all(t["CurrentState"].startswith("Running") for t in tasks)
        assert swarm.local_state(leaver.target).state == "inactive"
        assert swarm.retire(leader, [swarm.Leaving("node-3", leaver.target)], "shrink", timeout=30) == []
        assert swarm.parse_replicas(leader.run("docker service ls --filter name=shrink_web --format "
                                               "'{{.Replicas}}'").stdout) == (3, 3)   # scaled back

        # Three again: node-3 joins as a manager and node-2, a worker since the shrink, is promoted
        three = swarm.form(cluster.nodes, lambda _t: None, events.append)
        assert three.joined == ("node-3",) and three.managers == ("node-1", "node-2", "node-3")
        assert "node-2 is now a manager" in events
    finally:
        leader.run("docker stack rm shrink", check=False)
