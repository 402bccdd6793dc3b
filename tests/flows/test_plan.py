"""`inv deploy --plan`: what a deploy would do, with nothing changed on the droplet (its file tree
is hashed before and after) and no write call to the cloud."""
from __future__ import annotations

import dataclasses

import hashlib
import json
import os
from pathlib import Path

from deploy import cloud, flows
from remote.lock import LockHolder
from tests.flows.fakes import Unreachable

READ_ONLY_DOCKER = {("compose", "ps"), ("image", "inspect")}
MIGRATION = "django/notes/migrations/0001_initial.py"


def tree_digest(root: Path) -> str:
    """Every path under ``root`` with its mode, and each file's bytes or each link's target."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            digest.update(f"{path.relative_to(root)}\0{st.st_mode}\0".encode())
            if path.is_symlink():
                digest.update(os.readlink(path).encode())
            elif path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


def docker_state(world) -> tuple:
    return dict(world.docker.images), {n: (c.id, c.image, c.health) for n, c in world.docker.containers.items()}


def plan_of(out) -> dict:
    return json.loads((out.run.folder / "plan.json").read_text())


def planned(world, update_only: bool = False):
    """Run the plan, asserting it changed nothing anywhere; returns its outcome."""
    droplet = world.base.parent.parent
    before, docker_before, calls_before = tree_digest(droplet), docker_state(world), len(world.docker.calls)
    cloud_before, droplets_before = len(world.cloud.calls), len(world.droplets)
    out = world.invoke("deploy", flows.plan, mode="update-plan" if update_only else "full-plan", update_only=update_only)
    assert tree_digest(droplet) == before                      # not one byte, mode or link changed
    assert docker_state(world) == docker_before
    assert {tuple(argv[1:3]) for argv in world.docker.calls[calls_before:]} <= READ_ONLY_DOCKER
    assert all(not d.files_put and d.closed for d in world.droplets[droplets_before:])   # no file written
    asked = world.cloud.calls[cloud_before:]
    assert asked and not set(asked) & world.cloud.WRITES         # asked the cloud, changed nothing
    return out


def test_plan_for_a_new_droplet_lists_everything_it_would_create(world):
    world.cloud.exists = False
    out = planned(world)
    assert out.exit_code == 0, out.message
    assert out.step_names == ["settings", "token-check", "plan-provision"]
    assert world.cloud.calls == ["check_token", "find_cluster", "plan_provision"] and world.droplets == []   # no SSH either
    plan = plan_of(out)
    p = plan["provision"]
    assert (p["droplet_action"], p["name"], p["size"], p["region"]) == ("create", "stackdeploy-1", "s-2vcpu-4gb", "fra1")
    assert p["firewall"]["action"] == "create" and p["ssh_identity"] == "register"
    assert {c["name"] for c in p["dns"]["records_changed"]} == {"app.example.test", "flower.app.example.test",
                                                                 "admin.app.example.test"}
    [release] = plan["releases"]
    files = sorted(p.relative_to(world.stack).as_posix() for p in world.stack.rglob("*") if p.is_file())
    assert release["live_release"] is None and release["changed"] == files and release["removed"] == []
    assert release["build"] == {n: "full deploy" for n in ("api", "beat", "django", "flower", "frontend", "postgres", "traefik", "worker")}
    assert set(release["recreate"]) >= {"traefik", "postgres", "redis", "api"}
    assert release["migrations"]["added"] == [MIGRATION]
    assert "create stackdeploy-1: s-2vcpu-4gb in fra1" in out.message and "nothing was changed" in out.message
    assert {"plan.json", "plan.txt", "local/settings.json"} <= out.files and out.manifest["outcome"] == "success"


def test_plan_for_an_existing_droplet_with_one_changed_file(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    live = world.current()
    main = world.stack / "api" / "app" / "main.py"
    main.write_text(main.read_text() + "\n# v2\n")
    out = planned(world, update_only=True)
    assert out.exit_code == 0, out.message
    assert out.step_names == ["settings", "token-check", "discover", "connect", "plan-release"]
    [release] = plan_of(out)["releases"]
    assert release["live_release"] == live and release["lock"] is None
    assert (release["changed"], release["removed"]) == (["api/app/main.py"], [])
    assert release["build"] == {"api": "build inputs changed"}
    assert release["recreate"] == {"api": "new image: build inputs changed"}
    assert release["env_file"] == "unchanged" and not any(release["migrations"].values())
    assert "1 changed, 0 removed" in out.message and "api/app/main.py" in out.message
    assert not world.lock_held()

    # The deploy after it does what the plan said.
    before = {n: c.id for n, c in world.docker.containers.items()}
    assert world.invoke("deploy", flows.deploy, mode="update", update_only=True).exit_code == 0
    assert [n for n, c in world.docker.containers.items() if c.id != before[n]] == list(release["recreate"])


def test_a_full_plan_says_which_rebuilt_services_may_keep_running(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    main = world.stack / "api" / "app" / "main.py"
    main.write_text(main.read_text() + "\n# v2\n")
    out = planned(world)
    assert out.exit_code == 0, out.message
    assert "plan_provision" in world.cloud.calls and out.step("plan-provision")["status"] == "ok"
    [release] = plan_of(out)["releases"]
    assert release["build"]["api"] == "full deploy; build inputs changed" and len(release["build"]) == 8
    assert release["recreate"] == {"api": "new image: full deploy; build inputs changed"}
    assert any("keep running unless the rebuilt image differs" in n for n in release["notes"])


def test_plan_names_mounts_images_migrations_env_and_a_held_lock(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    static = world.stack / "traefik" / "traefik.yml"
    static.write_text(static.read_text() + "\n# tweak\n")
    dynamic = world.stack / "traefik" / "dynamic.yml"
    dynamic.write_text(dynamic.read_text() + "\n# tweak\n")
    compose = world.stack / "compose.yml"
    compose.write_text(compose.read_text().replace("image: redis:7-bookworm", "image: redis:7.2-bookworm"))
    new_migration = "django/notes/migrations/0002_note_title.py"
    (world.stack / new_migration).write_text("from django.db import migrations\n")
    world.set_env(RATE_LIMIT_API_RPM="90")
    (world.base / "lock").mkdir()
    holder = LockHolder(who="alice@laptop", when="2026-11-26T10:00:00+00:00", release="r-alice", command="inv deploy")
    (world.base / "lock" / "holder.json").write_text(json.dumps(holder.__dict__))

    out = planned(world, update_only=True)
    assert out.exit_code == 0, out.message
    [release] = plan_of(out)["releases"]
    assert release["recreate"]["traefik"] == "bind-mounted traefik/traefik.yml changed"
    assert any(n.startswith("traefik/dynamic.yml changed: Traefik reloads its routes") for n in release["notes"])
    assert release["migrations"] == {"added": [new_migration], "changed": [], "removed": []}
    assert set(release["build"]) == {"django", "worker", "beat", "flower"}     # one shared image
    assert release["env_file"] == "changed" and any("env file differs" in n for n in release["notes"])
    assert "alice@laptop" in release["lock"] and "held by alice@laptop" in out.message
    assert out.step("plan-release")["status"] == "warning"
    assert json.loads((world.base / "lock" / "holder.json").read_text())["who"] == "alice@laptop"

    for tweaked in (static, dynamic):
        tweaked.write_text(tweaked.read_text().replace("\n# tweak\n", ""))   # the image change alone
    release = plan_of(planned(world, update_only=True))["releases"][0]
    assert release["recreate"]["redis"] == "image redis:7-bookworm -> redis:7.2-bookworm"


def test_plan_with_the_droplet_unreachable_is_partial_and_says_why(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    world.connector = Unreachable()
    out = world.invoke("deploy", flows.plan, mode="full-plan")
    assert out.exit_code == 4
    assert out.manifest["outcome"] == "partial" and world.cloud.calls[-3:] == ["check_token", "find_cluster", "plan_provision"]
    assert any("release plan" in s["what"] and "connection refused" in s["why"] for s in out.manifest["skipped"])
    assert plan_of(out)["releases"] == [] and plan_of(out)["provision"]["droplet_action"] == "found"


def _node(number: int) -> "cloud.DropletInfo":
    return cloud.DropletInfo(id=100 + number, name=f"stackdeploy-1-{number}", region="fra1", size="s-2vcpu-4gb",
                             status="active", public_ipv4=f"203.0.113.{20 + number}", created=False,
                             private_ipv4=f"10.110.0.{number}")


def test_a_swarm_plan_names_the_nodes_to_create_and_remove_and_node_ones_release(world):
    assert world.invoke("deploy", flows.deploy).exit_code == 0          # node 1 exists, runs a release
    world.cloud.members = {2: _node(2), 4: _node(4)}
    world.set_env(NODES="3")
    out = planned(world)
    assert out.exit_code == 0, out.message
    assert out.step_names == ["settings", "token-check", "plan-cluster", "connect", "plan-release"]
    cluster = plan_of(out)["cluster"]
    assert [(name, bool(d)) for name, d in cluster["nodes"]] == [
        ("stackdeploy-1", True), ("stackdeploy-1-2", True), ("stackdeploy-1-3", False)]
    assert [d["name"] for d in cluster["surplus"]] == ["stackdeploy-1-4"]
    assert "create stackdeploy-1-3 (tagged stackdeploy-1-swarm)" in out.message
    assert "stackdeploy-1-4: tasks moved start-first" in out.message
    assert "3 manager(s): stackdeploy-1, stackdeploy-1-2, stackdeploy-1-3" in out.message
    [release] = plan_of(out)["releases"]
    assert release["host"] == "stackdeploy-1" and release["live_release"] == world.current()

    # update-only never changes the count: the plan says the deploy would stop, and it does,
    # before any SSH connection or write (nodes 1, 2 and 4 exist; NODES is 3 after all)
    out = planned(world, update_only=True)
    assert out.exit_code == 0 and "--update-only would stop (exit 2)" in out.message
    droplets_before, calls_before = len(world.droplets), len(world.cloud.calls)
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    # three droplets, but node 3 is not among them: node 4 never stands in for it
    assert out.exit_code == 2 and "the cluster should have 3 nodes but 2 exist (missing: stackdeploy-1-3)" in out.message
    world.set_env(NODES="2")
    out = world.invoke("deploy", flows.deploy, mode="update", update_only=True)
    assert out.exit_code == 2 and "the cluster has 3 nodes but NODES is 2 (stackdeploy-1-4 beyond it)" in out.message
    assert "full `inv deploy --nodes N`" in out.message and "unset NODES" in out.message
    assert len(world.droplets) == droplets_before and not set(world.cloud.calls[calls_before:]) & world.cloud.WRITES


def test_two_nodes_listed_at_one_address_are_refused_before_any_connection(world):
    """One address is one machine to SSH (host keys are pinned by address): node 3 would be
    deployed as node 2. Seen on the lab, never expected of DigitalOcean, refused either way."""
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    twin = dataclasses.replace(_node(3), public_ipv4=_node(2).public_ipv4)
    world.cloud.members = {2: _node(2), 3: twin}
    world.set_env(NODES="3")
    # a deploy stops (exit 1); verify says what it could not look at (partial, exit 4)
    for invoked, code in ((world.invoke("deploy", flows.deploy, mode="update", update_only=True), 1),
                          (world.invoke("verify", flows.verify_only, mode="verify"), 4)):
        assert invoked.exit_code == code, invoked.run.folder.joinpath("run.log").read_text()
        assert f"stackdeploy-1-2 and stackdeploy-1-3 are both listed at {twin.public_ipv4}" in invoked.message
        assert "connect" not in invoked.step_names
