"""The stack on a Docker Swarm of three lab droplets (`inv deploy --nodes 3`): a full deploy, an
update-only under the prober, the Swarm ports closed to everyone but the nodes, a shrink to two
under the prober, the worker stopped while traffic runs (reported by `inv verify`, the
service kept up), and the database and Redis passwords rotated under the prober. Its own lab; the tests run in file order and build on the deployment the
first one makes."""
from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess
import time

import pytest

from lab import config as labconfig
from lab.prober import DEFAULT_ROUTES, Prober
from lab.services import registry as labregistry

from .conftest import REPO, SWARM_LAB, started_lab

pytestmark = [pytest.mark.lab, pytest.mark.docker]

# RATE_LIMIT_API_RPM from the first deploy on: the prober's /api traffic must stay inside the
# rate limits (Traefik's is 4x the API's), and changing it later would restart Traefik.
NODES = {"NODES": "3", "CHECK_RATE_LIMIT": "false", "CHECK_SAMPLES": "3", "RATE_LIMIT_API_RPM": "1200"}
STATE: dict = {}


@pytest.fixture(scope="module")
def swarm_lab(tmp_path_factory):
    yield from started_lab(tmp_path_factory, SWARM_LAB)


def _droplets(lab) -> dict[str, str]:
    """node name -> its lab container."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=stackdeploy.lab={SWARM_LAB['LAB_NAME']}",
                          "--filter", "label=stackdeploy.lab.kind=droplet", "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=True).stdout.split()
    names = {}
    for container in out:
        host = subprocess.run(["docker", "exec", container, "hostname"], capture_output=True, text=True).stdout.strip()
        names[host or container] = container
    return names


def _as_deploy(container: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", "-u", "deploy", container, "sh", "-c", command],
                          capture_output=True, text=True, timeout=120)


def test_a_full_deploy_on_three_nodes_runs_every_service_with_its_replicas(swarm_lab):
    res = swarm_lab.inv("deploy", extra=NODES)
    data = swarm_lab.manifest()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    STATE["ip"], STATE["leader"] = data["target"]["ip"], data["target"]["name"]
    assert data["details"]["swarm"]["managers"] and len(data["details"]["swarm"]["managers"]) == 3
    services = data["details"]["stack-up"]["services"]
    for name in ("stackdeploy_api", "stackdeploy_django", "stackdeploy_frontend", "stackdeploy_worker"):
        assert services[name] == "3/3", services
    for name in ("stackdeploy_beat", "stackdeploy_postgres", "stackdeploy_redis", "stackdeploy_traefik"):
        assert services[name] == "1/1", services
    # images built once, on node 1, and pulled by the others from the lab's registry
    server = labregistry.server(labconfig.load(environ=SWARM_LAB))
    images = data["details"]["stack-up"]["images"]
    assert images and all(ref.startswith(f"{server}/") for ref in images.values()), images
    nodes = _droplets(swarm_lab)
    assert len(nodes) == 3
    repositories = {ref.split("/")[-1].rsplit(":", 1)[0] for ref in images.values()}   # e.g. stack-api
    for name, container in nodes.items():
        local = _as_deploy(container, "docker images --format '{{.Repository}}'").stdout.split()
        built_here = bool(repositories & set(local))          # a local build tag, not a registry ref
        assert built_here == (name == data["target"]["name"]), (name, local)
    # the registry login does not outlive the deploy on node 1 (the swarm keeps what it was handed)
    leader = nodes[data["target"]["name"]]
    config = _as_deploy(leader, "cat /opt/stackdeploy/.docker-deploy/config.json 2>/dev/null").stdout
    assert swarm_lab.values["DIGITALOCEAN_TOKEN"] not in config and '"auth"' not in config, config
    folder = swarm_lab.last_run()
    for node in nodes:
        assert (folder / "remote" / node / "docker-ps.txt").is_file()
    assert (folder / "remote" / data["target"]["name"] / "swarm-nodes.json").is_file()
    checks = {c["name"]: c["status"] for c in data["checks"]}
    assert {n: s for n, s in checks.items() if s == "fail"} == {}


def test_the_swarm_ports_answer_the_nodes_but_not_the_operator(swarm_lab):
    """The Cloud Firewall opens 2377/7946/4789 only between the droplets tagged for the cluster."""
    nodes = _droplets(swarm_lab)
    leader = nodes[swarm_lab.manifest(sorted(p for p in swarm_lab.logs.iterdir())[0])["target"]["name"]]
    private = _as_deploy(leader, "docker info --format '{{.Swarm.NodeAddr}}'").stdout.strip()
    other = next(c for c in nodes.values() if c != leader)
    probe = "timeout 3 bash -c '</dev/tcp/{ip}/2377' && echo open || echo closed"
    assert _as_deploy(other, probe.format(ip=private)).stdout.strip() == "open"
    # this machine is the operator: its SSH is allowed, the Swarm port is not
    from_operator = subprocess.run(["bash", "-c", probe.format(ip=private)], capture_output=True, text=True)
    assert from_operator.stdout.strip() == "closed"


def _probed(lab, *argv: str, extra: dict) -> tuple[subprocess.CompletedProcess, dict]:
    with Prober(STATE["ip"], lab.values["DOMAIN"], DEFAULT_ROUTES) as prober:
        res = lab.inv(*argv, extra=extra)
    return res, prober.report.summary()


def test_update_only_rolls_the_api_forward_with_zero_failed_requests(swarm_lab):
    init = swarm_lab.stack / "api" / "app" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', '__version__ = "9.0.1"', init.read_text()))
    res, summary = _probed(swarm_lab, "deploy", "--update-only", extra=NODES)
    assert res.returncode == 0, res.stdout[-4000:]
    STATE["update"] = summary
    assert summary["failed"] == 0, json.dumps(summary["routes"])
    assert summary["sent"] > 500
    health = json.loads(subprocess.run(["curl", "-sk", "--resolve", f"{swarm_lab.values['DOMAIN']}:443:{STATE['ip']}",
                                        f"https://{swarm_lab.values['DOMAIN']}/api/health"],
                                       capture_output=True, text=True).stdout)
    assert health["versions"]["api"] == "9.0.1"


def _api_version(lab) -> str:
    return json.loads(subprocess.run(["curl", "-sk", "--resolve", f"{lab.values['DOMAIN']}:443:{STATE['ip']}",
                                      f"https://{lab.values['DOMAIN']}/api/health"],
                                     capture_output=True, text=True).stdout)["versions"]["api"]


def test_rollback_puts_the_previous_release_back_with_zero_failed_requests(swarm_lab):
    original = re.search(r'__version__ = "(.*)"', (REPO / "stack" / "api" / "app" / "__init__.py").read_text())[1]
    assert _api_version(swarm_lab) == "9.0.1"
    res, summary = _probed(swarm_lab, "rollback", extra=NODES)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    STATE["rollback"] = summary
    print(f"swarm rollback: {summary['sent']} requests, {summary['failed']} failed: {json.dumps(summary['routes'])}")
    assert summary["failed"] == 0, json.dumps(summary["routes"])
    assert _api_version(swarm_lab) == original
    data = swarm_lab.manifest()
    assert {s["name"]: s["status"] for s in data["steps"]}.get("build") is None     # nothing rebuilt
    assert "read-only login" in {s["name"]: s.get("message", "") for s in data["steps"]}["registry"]


def test_with_nodes_unset_push_up_lock_releases_and_collect_act_on_the_swarm(swarm_lab):
    """NODES unset: every task finds the three nodes by their tag. push builds on node 1 and
    changes nothing live; up puts that release live through the swarm (no Compose container on
    any node) with zero failed requests; the lock and the releases are node 1's, once."""
    unset = {k: v for k, v in NODES.items() if k != "NODES"}
    before = _api_version(swarm_lab)
    init = swarm_lab.stack / "api" / "app" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', '__version__ = "9.0.2"', init.read_text()))
    res = swarm_lab.inv("push", extra=unset)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    pushed = swarm_lab.manifest()["details"]["push"]["release_id"]
    assert _api_version(swarm_lab) == before                       # nothing live changed
    res, summary = _probed(swarm_lab, "up", extra=unset)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert summary["failed"] == 0, json.dumps(summary["routes"])
    data = swarm_lab.manifest()
    assert data["details"]["live_release"] == pushed and data["details"]["stack-up"]["services"]["stackdeploy_api"] == "3/3"
    assert _api_version(swarm_lab) == "9.0.2"
    for name, container in _droplets(swarm_lab).items():
        compose = _as_deploy(container, "docker ps -q --filter label=com.docker.compose.project").stdout.split()
        assert compose == [], f"Compose containers on {name}: {compose}"
    res = swarm_lab.inv("lock.status", extra=unset)
    assert res.returncode == 0 and "deploy lock: free" in res.stdout, res.stdout[-2000:]
    res = swarm_lab.inv("releases", extra=unset)
    assert res.returncode == 0, res.stdout[-2000:]
    listed = (swarm_lab.last_run() / "releases.txt").read_text().splitlines()
    assert [line.split()[1] for line in listed if line.startswith("*")] == [pushed]
    assert len({line.lstrip("* ").split()[0] for line in listed}) == len(listed)   # each release once
    res = swarm_lab.inv("collect", extra=unset)
    assert res.returncode == 0, res.stdout[-4000:]
    folder, leader = swarm_lab.last_run(), STATE["leader"]
    assert (folder / "remote" / leader / "swarm-services.json").is_file()
    assert all((folder / "remote" / f"{leader}-{k}" / "docker-ps.txt").is_file() for k in (2, 3))


def test_shrinking_to_two_nodes_moves_the_tasks_first_then_deletes_the_third_with_zero_failed_requests(swarm_lab):
    leader_name = STATE["leader"]
    third = f"{leader_name}-3"
    res, summary = _probed(swarm_lab, "deploy", extra={**NODES, "NODES": "2"})
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    STATE["shrink"] = summary
    print(f"shrink 3 -> 2: {summary['sent']} requests, {summary['failed']} failed: {json.dumps(summary['routes'])}")
    assert summary["failed"] == 0, json.dumps(summary["routes"])
    data = swarm_lab.manifest()
    assert data["details"]["shrink"] == {"left_swarm": [third], "deleted": [third]}
    # the stack file the last deploy wrote into its release is the deployer's own, not drift
    assert {s["name"]: s["status"] for s in data["steps"]}["push"] == "ok", data["steps"]
    services = data["details"]["stack-up"]["services"]
    assert services["stackdeploy_api"] == services["stackdeploy_frontend"] == "2/2", services
    leader = _droplets(swarm_lab)[leader_name]
    listed = _as_deploy(leader, "docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'").stdout.split("\n")
    assert sorted(line.split()[0] for line in listed if line.strip()) == [leader_name, f"{leader_name}-2"]
    assert any(line.startswith(f"{leader_name} ") and "Leader" in line for line in listed)
    assert not any(line.startswith(f"{leader_name}-2 ") and ("Leader" in line or "Reachable" in line)
                   for line in listed), listed            # two nodes: one manager, node 2 a worker
    deadline = time.monotonic() + 60                      # the lab deletes the machine in the background
    while third in _droplets(swarm_lab) and time.monotonic() < deadline:
        time.sleep(2)
    assert third not in _droplets(swarm_lab)
    # update-only and rollback never change the count: asked for three, they say so
    res = swarm_lab.inv("deploy", "--update-only", extra=NODES)
    assert res.returncode == 2 and "the cluster should have 3 nodes but 2 exist" in res.stderr + res.stdout


def test_a_stopped_node_is_survived_and_reported_by_verify(swarm_lab):
    nodes = _droplets(swarm_lab)
    leader_name = STATE["leader"]
    victim_name, victim = next((n, c) for n, c in nodes.items() if n != leader_name)
    leader = nodes[leader_name]
    with Prober(STATE["ip"], swarm_lab.values["DOMAIN"], DEFAULT_ROUTES) as prober:
        time.sleep(5)
        subprocess.run(["docker", "stop", "-t", "0", victim], check=True, capture_output=True)
        # Until the swarm has marked the node down and every service runs its replicas on the
        # nodes left, then 5 s more under traffic (a fixed 45 s before: the swarm takes what it takes).
        deadline = time.monotonic() + 90
        while not _survived(leader, victim_name) and time.monotonic() < deadline:
            time.sleep(2)
        time.sleep(5)
    summary = prober.report.summary()
    STATE["node_loss"] = summary
    print(f"node loss: {summary['sent']} requests, {summary['failed']} failed: {json.dumps(summary['routes'])}")
    # the goal is 0; requests in flight on the stopped node are lost with it
    assert summary["failed"] <= 5, json.dumps(summary["routes"])
    try:
        res = swarm_lab.inv("verify", extra={**NODES, "NODES": "2"})
        data = swarm_lab.manifest()
        assert res.returncode == 1
        assert f"node {victim_name} (Down)" in data["error"] and "swarm-nodes.json" in data["error"]
        assert {c["name"]: c["status"] for c in data["checks"] if c["status"] == "fail"} == {}
        assert any(s["what"] == f"node {victim_name}" for s in data["skipped"]), data["skipped"]
    finally:
        subprocess.run(["docker", "start", victim], check=True, capture_output=True)


def _survived(leader: str, victim: str) -> bool:
    """The stopped node is Down on the leader and every service runs as many tasks as it wants."""
    nodes = _as_deploy(leader, "docker node ls --format '{{.Hostname}} {{.Status}}'").stdout.split("\n")
    down = any(line.split()[:2] == [victim, "Down"] for line in nodes if line.strip())
    counts = [line.split()[0].split("/") for line in
              _as_deploy(leader, "docker service ls --format '{{.Replicas}}'").stdout.splitlines() if line.strip()]
    return down and bool(counts) and all(running == wanted for running, wanted in counts)


def test_growing_back_to_three_adds_a_node_and_promotes_managers_with_zero_failed_requests(swarm_lab):
    leader_name = STATE["leader"]
    res, summary = _probed(swarm_lab, "deploy", extra=NODES)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    STATE["grow"] = summary
    print(f"grow 2 -> 3: {summary['sent']} requests, {summary['failed']} failed: {json.dumps(summary['routes'])}")
    assert summary["failed"] == 0, json.dumps(summary["routes"])
    data = swarm_lab.manifest()
    assert data["details"]["swarm"]["joined"] == [f"{leader_name}-3"]
    assert len(data["details"]["swarm"]["managers"]) == 3          # node 2, a worker at two nodes, promoted
    assert data["details"]["stack-up"]["services"]["stackdeploy_api"] == "3/3"
    assert sorted(_droplets(swarm_lab)) == [leader_name, f"{leader_name}-2", f"{leader_name}-3"]


def _psql(lab, statements: str) -> str:
    """SQL in PostgreSQL's task on node 1 (the data node), one transaction per statement."""
    node1 = _droplets(lab)[STATE["leader"]]
    pg = "$(docker ps -q --filter label=com.docker.swarm.service.name=stackdeploy_postgres)"
    argv = (f"docker exec -i {pg} psql -X -q -A -t -v ON_ERROR_STOP=1 "
            f"-U {lab.values['POSTGRES_USER']} -d {lab.values['POSTGRES_DB']}")
    res = subprocess.run(["docker", "exec", "-i", node1, "sh", "-c", argv], input=statements,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_a_restore_on_the_swarm_brings_a_backup_back_and_every_service_with_its_replicas(swarm_lab):
    """Issue 21 on a swarm: pgBackRest on node 1, the writers and PostgreSQL scaled to no task, the
    restore in a one-off container from the service's spec on its volume, the stack deployed again."""
    assert swarm_lab.values.get("SPACES_BUCKET"), "the lab prints Spaces settings (inv lab.env)"
    _psql(swarm_lab, "CREATE TABLE IF NOT EXISTS swarm_probe (n int PRIMARY KEY);\nINSERT INTO swarm_probe VALUES (1);\n")
    res = swarm_lab.inv("backup", extra=NODES)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    label = swarm_lab.manifest()["details"]["backup"]["label"]
    _psql(swarm_lab, "INSERT INTO swarm_probe VALUES (2);\n")
    t0 = time.monotonic()
    res = swarm_lab.inv("restore", "--backup", label, "--yes", extra=NODES)
    seconds = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
    print(f"swarm restore --backup: {seconds:.1f} s")
    assert _psql(swarm_lab, "SELECT n FROM swarm_probe ORDER BY n;\n").split() == ["1"]
    node1 = _droplets(swarm_lab)[STATE["leader"]]
    listed = subprocess.run(["docker", "exec", node1, "docker", "service", "ls", "--format", "{{.Name}} {{.Replicas}}"],
                            capture_output=True, text=True, timeout=60).stdout
    replicas = dict(line.split() for line in listed.splitlines())
    assert replicas["stackdeploy_api"] == "3/3" and replicas["stackdeploy_postgres"] == "1/1", replicas


ADD_TAGS = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.AddField(model_name="note", name="tags", field=models.CharField(max_length=100, default=""))]
"""


def test_a_release_with_a_migration_and_rotated_passwords_migrates_first_then_rolls_with_zero_failed_requests(
        swarm_lab):
    """Issue 22 on a swarm (one flow for one droplet and for N), in one release, so one swarm
    rollout pays for both: the migrate step runs in a one-off of the new django image on the
    database's network, with the live service's env, after a backup, before `stack deploy`; the
    running PostgreSQL and Redis tasks take the rotated passwords beside the old ones, the
    clients roll, the old ones are retired (deploy/live_secrets.py); neither server task is
    replaced, no request fails, and a rollback across the migration is refused."""
    node1 = _droplets(swarm_lab)[STATE["leader"]]
    servers = ("$(docker ps -q --filter label=com.docker.swarm.service.name=stackdeploy_postgres) "
               "$(docker ps -q --filter label=com.docker.swarm.service.name=stackdeploy_redis)")
    before = subprocess.run(["docker", "exec", node1, "sh", "-c", f"echo {servers}"],
                            capture_output=True, text=True, check=True).stdout.split()
    models = swarm_lab.stack / "django" / "notes" / "models.py"
    migration = swarm_lab.stack / "django" / "notes" / "migrations" / "0002_note_tags.py"
    original = models.read_text()
    new = {k: secrets.token_urlsafe(40) for k in ("POSTGRES_APP_PASSWORD", "REDIS_PASSWORD")}
    old = {k: swarm_lab.values[k] for k in new}
    try:
        models.write_text(original.replace("    created_at = models.DateTimeField(auto_now_add=True)\n",
                                           "    created_at = models.DateTimeField(auto_now_add=True)\n"
                                           "    tags = models.CharField(max_length=100, default=\"\")\n"))
        migration.write_text(ADD_TAGS)
        lines = [l for l in swarm_lab.env_file.read_text().splitlines() if l.split("=", 1)[0] not in new]
        swarm_lab.env_file.write_text("\n".join(lines + [f"{k}={v}" for k, v in new.items()]) + "\n")
        swarm_lab.values.update(new)
        res, summary = _probed(swarm_lab, "deploy", "--update-only", extra=NODES)
        assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
        STATE["rotation"] = summary
        print(f"swarm migration + rotation: {summary['sent']} requests, {summary['failed']} failed: "
              f"{json.dumps(summary['routes'])}")
        data = swarm_lab.manifest()
        applied = data["details"]["migrations"]
        assert applied["applied"] == ["notes.0002_note_tags"] and applied["backup"], applied
        names = [s["name"] for s in data["steps"]]
        assert names.index("migrate") < names.index("backup") < names.index("stack-up")
        assert "tags" in _psql(swarm_lab, "SELECT column_name FROM information_schema.columns "
                                          "WHERE table_name = 'notes_note';\n").split()
        assert data["details"]["secrets_rotated"] == ["POSTGRES_APP_PASSWORD", "REDIS_PASSWORD"]
        assert data["details"]["secrets_live"] == {"postgres": True, "redis": True}
        after = subprocess.run(["docker", "exec", node1, "sh", "-c", f"echo {servers}"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert after == before and len(after) == 2
        assert summary["failed"] == 0, json.dumps(summary["routes"])
        ping = f"docker exec {after[1]} sh -c 'REDISCLI_AUTH=\"$1\" redis-cli ping' sh"
        refused = subprocess.run(["docker", "exec", node1, "sh", "-c",
                                  f"{ping} {shlex.quote(old['REDIS_PASSWORD'])}"], capture_output=True, text=True)
        assert "WRONGPASS" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
        app = swarm_lab.values["POSTGRES_APP_USER"]
        login = subprocess.run(["docker", "exec", node1, "sh", "-c",
                                f"docker exec -e PGPASSWORD={shlex.quote(old['POSTGRES_APP_PASSWORD'])} {after[0]} "
                                f"psql -X -At -h 127.0.0.1 -U {app} -d {swarm_lab.values['POSTGRES_DB']} -c 'SELECT 1'"],
                               capture_output=True, text=True)
        assert login.returncode != 0 and "password authentication failed" in login.stderr, login.stderr
        res = swarm_lab.inv("rollback", extra=NODES)
        assert res.returncode == 1 and "expects an older schema" in res.stdout + res.stderr
    finally:
        models.write_text(original)
        migration.unlink(missing_ok=True)
