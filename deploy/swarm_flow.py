"""`inv deploy` with NODES > 1: the same release, run by Docker Swarm over N droplets.

    provision-cluster   N droplets, one tag, one VPC, one firewall (Swarm ports only between nodes)
    connect, bootstrap  every node (cloud-init done: Docker is there)
    lock                on node 1, the leader: one deploy at a time for the whole cluster
    swarm               form it over the VPC (idempotent), label node 1 as the data and edge node
    push, build         on the leader only, exactly as for one droplet: images built once
    registry            the account's container registry; the leader logs in and pushes, then
                        hands the swarm a read-only login for its pulls
    switch, stack-up    `current` names the release; `docker stack deploy`; Swarm rolls each
                        changed service start-first and rolls it back itself if the new tasks fail
    shrink              nodes beyond NODES: tasks moved off start-first, out of the swarm, deleted
    checks, collect     from outside against node 1 (DNS names it); swarm state + every node

A failure before the switch changes nothing that runs. After it, `current` goes back to the
previous release (Swarm has already put the previous tasks back). Node 1 keeps its name, so
growing from one droplet keeps it: its Compose stack is stopped (volumes kept) the first time
the stack starts under Swarm.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from deploy import cloud, hostkey, registry, steps, wiring
from deploy import plan as deploy_plan
from deploy.errors import EXIT_CONFIG, OperatorError
from deploy.run import Run
from deploy.settings import Settings, require_stack_keys
from deploy.wiring import Edges, Host, Inventory
from remote import collect as remote_collect
from remote import commands as cmd
from remote import registry_cmds, stackfile, swarm, swarm_release, sync
from remote.target import Target


def provision_cluster(run: Run, cloud_port, spec: cloud.CloudSpec, account: cloud.AccountInfo,
                      known_hosts: Path) -> cloud.ClusterResult:
    """Every node with an SSH host key of its own, generated here and pinned before anyone connects."""
    keys = {name: hostkey.generate(run.registry) for name in cloud.node_names(spec.droplet_name, spec.nodes)}
    try:
        for name, key in keys.items():
            hostkey.save_pending(key, known_hosts, name)
    except OSError as exc:
        raise OperatorError(f"cannot keep the new droplets' SSH host keys beside {known_hosts} "
                            f"({exc.strerror or type(exc).__name__})",
                            "point SSH_KNOWN_HOSTS to a file in a folder this user can write") from None
    spec = dataclasses.replace(spec, host_key=keys[spec.droplet_name])

    def on_droplet(droplet: cloud.DropletInfo) -> None:
        if droplet.name == spec.droplet_name:
            steps.record_target(run, droplet)
        if droplet.created:
            hostkey.promote(known_hosts, droplet.name)

    with run.step("provision") as step:
        try:
            result = cloud_port.provision_cluster(
                spec, on_event=lambda level, msg: run.warn(msg) if level == "warning" else run.log(msg),
                account=account, on_droplet=on_droplet, host_key_for=keys.__getitem__)
        finally:
            for name in keys:
                hostkey.drop_pending(known_hosts, name)
        steps.record_target(run, result.droplet)
        run.record("provision", result)
        refuse_shared_addresses(result.nodes)   # before a key is pinned for an address two nodes share
        for node in result.nodes:
            if node.public_ipv4:
                steps.pin_host_key(run, known_hosts, node, spec.ssh_port)
        made = sum(1 for n in result.nodes if n.created)
        step.note(f"{len(result.nodes)} nodes ({made} created) tagged {result.tag}; firewall {result.firewall.status}; "
                  f"dns {result.dns.status}" + (f"; {len(result.surplus)} surplus" if result.surplus else ""))
        if result.warnings:
            step.warn(step.step.message + "; " + "; ".join(result.warnings))
    run.artifacts.write_json("provision.json", run.details["provision"])
    missing = [n.name for n in result.nodes if not (n.public_ipv4 and n.private_ipv4)]
    if missing:
        raise OperatorError(f"{', '.join(missing)} have no public and private IPv4 address yet, so the swarm "
                            "cannot form", "check the droplets' networking in the DigitalOcean console, then rerun")
    return result


def refuse_shared_addresses(nodes: Sequence[cloud.DropletInfo]) -> None:
    """Two nodes the API lists at one address are one machine to SSH, whose host key is pinned
    by address: a deploy would treat node 3 as node 2 (seen on the lab, when a restarted node
    came back at another address than the one listed)."""
    by_address: dict[str, list[str]] = {}
    for node in nodes:
        if node.public_ipv4:
            by_address.setdefault(node.public_ipv4, []).append(node.name)
    shared = {address: names for address, names in by_address.items() if len(names) > 1}
    if shared:
        raise OperatorError("; ".join(f"{' and '.join(names)} are both listed at {address}"
                                      for address, names in shared.items()) + ", so the deploy cannot tell them apart",
                            "check the droplets' addresses in the DigitalOcean console (a droplet just deleted or "
                            "powered off may still be listed); run again once each node has its own")


def form_swarm(run: Run, nodes: Sequence[swarm.Node]) -> swarm.SwarmResult:
    with run.step("swarm") as step:
        result = swarm.form(nodes, run.registry.add_value, run.log)
        run.record("swarm", {"managers": list(result.managers), "workers": list(result.workers),
                             "joined": list(result.joined)})
        step.note(f"{len(result.managers)} manager(s), {len(result.workers)} worker(s)"
                  + (f"; joined {', '.join(result.joined)}" if result.joined else ""))
    return result


@contextmanager
def registry_login(run: Run, spec: cloud.CloudSpec, name: str, leader: Target,
                   read_write: bool = True) -> Iterator[tuple[str, str]]:
    """(image prefix, config folder): the leader's docker client logged in to the account's
    registry for the block (read-write to push; a rollback only pulls), logged out after it
    (the swarm keeps the auth it was handed by `stack deploy --with-registry-auth` for its
    pulls; nothing stays on the leader's disk)."""
    with run.step("registry") as step:
        info = registry.ensure_registry(spec, name, on_event=lambda level, msg: run.log(msg))
        login = registry.docker_credentials(spec, registry=run.registry, read_write=read_write)
        config_dir = leader.layout.base.rstrip("/") + "/.docker-deploy"
        registry_cmds.login(leader, config_dir, login.server, login.auth.reveal())
        step.note(f"{info.name} at {login.server} ({'created' if info.created else 'found'}; "
                  f"{'read-write' if read_write else 'read-only'} login)")
    try:
        yield f"{login.server}/{info.name}", config_dir
    finally:
        res = leader.run(registry_cmds.logout_command(config_dir, login.server), check=False)
        if not res.ok:
            run.warn(f"logging the leader out of {login.server} failed ({res.tail()}): remove "
                     f"{config_dir}/config.json on {leader.name}")


def pull_only_login(run: Run, spec: cloud.CloudSpec, leader: Target, config_dir: str) -> None:
    """Replace the push's read-write login with a read-only one that never expires: it is what
    `stack deploy --with-registry-auth` hands every node, kept for every later pull (a task
    rescheduled after a node's loss pulls again), so it must not be able to push."""
    login = registry.docker_credentials(spec, registry=run.registry, read_write=False)
    registry_cmds.login(leader, config_dir, login.server, login.auth.reveal())


def stack_up(run: Run, leader: Target, settings: Settings, release_id: str, previous: str | None,
             image_map: dict[str, dict[str, str]], prefix: str, config_dir: str, nodes: int,
             before_deploy: Callable[[], None] = lambda: None) -> dict:
    """Push the images, write the stack file from compose's model of the live release, deploy it
    and wait for Swarm's rollout. ``before_deploy`` runs between the push and the deploy (the
    read-only login). On failure `current` goes back to ``previous``."""
    spec = wiring.compose_spec(settings)
    project = settings.project
    with run.step("stack-up") as step:
        try:
            local = {name: entry["ref"] for name, entry in image_map.items()}
            refs = swarm_release.registry_refs(local, lambda repo, tag: f"{prefix}/{repo}:{tag}")
            swarm_release.publish(leader, config_dir, local, refs)
            stack = stackfile.swarm_stack(swarm_release.normalized_config(leader, spec), refs, nodes=nodes)
            path = swarm_release.write_stack(leader, release_id, stack)
            before_deploy()
            if leader.run(cmd.service_containers(project, "traefik"), check=False).stdout.strip():
                # the first start under Swarm on a droplet that ran Compose: ports 80/443 must be free
                leader.run(f"docker compose -p {project} down --remove-orphans", "stopping the Compose stack "
                           "(volumes kept) before Swarm takes over", timeout=600)
            since = swarm_release.deploy(leader, config_dir, path, project)
            states = swarm.wait_rollout(leader, project, since, timeout=float(settings["HEALTH_TIMEOUT"]),
                                        on_change=lambda s: run.log("swarm: " + ", ".join(
                                            f"{v.name.removeprefix(project + '_')} {v.running}/{v.desired}"
                                            for v in sorted(s.values(), key=lambda v: v.name))))
        except (OperatorError, ValueError) as exc:
            sync.record_outcome(leader, release_id, "failed")
            if previous:
                sync.switch(leader, previous)
                run.log(f"current -> {previous} again")
            if isinstance(exc, swarm.RolloutFailed):
                run.artifacts.write_text(f"{leader.artifact_prefix}swarm-tasks.txt", leader.run(
                    swarm.tasks_command(project, as_json=False), check=False).output)
            if isinstance(exc, ValueError):
                raise OperatorError(f"the stack cannot run on a swarm: {exc}",
                                    "fix stack/compose.yml (see README, Scaling out), or deploy with NODES=1") from None
            raise
        sync.record_outcome(leader, release_id, "success")
        summary = {name: f"{s.running}/{s.desired}" for name, s in sorted(states.items())}
        run.record("stack-up", {"services": summary, "images": refs})
        step.note(f"{len(states)} services running their replicas")
    return summary


def collect(run: Run, settings: Settings, inventory: Inventory) -> list[dict]:
    """The swarm from the leader (nodes, services, tasks) plus each node's own state. A node
    that cannot be reached is reported and skipped."""
    leader = inventory.targets[0]
    services: list[dict] = []
    with run.step("collect") as step:
        result = remote_collect.collect_swarm(leader, settings.project, run.artifacts.write_text)
        services = result.services
        reached = 0
        for target in inventory:
            if not target.connected:
                continue
            for name, command in (("docker-ps.txt", "docker ps -a"), ("docker-df.txt", cmd.docker_system_df()),
                                  ("memory.txt", cmd.free_m()), ("host.txt", "uname -a; uptime; df -h /")):
                res = target.run(command, check=False, timeout=60)
                run.artifacts.write_text(f"{target.artifact_prefix}{name}", res.stdout if res.ok else
                                         f"# collection failed\n# command: {command}\n# error: {res.tail()}\n")
            reached += 1
        step.note(f"swarm state and {reached} of {len(inventory)} nodes collected")
    return services


def nodes_down(leader: Target) -> list[str]:
    listed = swarm.json_lines(leader.run(swarm.nodes_command(), check=False).stdout)
    return sorted(f"{n.get('Hostname')} ({n.get('Status')})" for n in listed if n.get("Status") != "Ready")


def find_nodes(run: Run, cloud_port, spec: cloud.CloudSpec, exact: bool = True) -> list[cloud.DropletInfo]:
    """The cluster's nodes 1..NODES by name, read-only (update-only, verify, rollback): each
    must exist. Others beyond NODES: ``exact`` refuses (update-only and rollback never change
    the count); otherwise (verify) they are checked too."""
    with run.step("discover") as step:
        found = cloud_port.find_cluster(spec)
        names = cloud.node_names(spec.droplet_name, spec.nodes)
        by_name = {n.name: n for n in found}
        missing = [name for name in names if name not in by_name]
        extra = [n for n in found if n.name not in names]
        if missing:
            raise OperatorError(f"the swarm should have {spec.nodes} nodes but {spec.nodes - len(missing)} exist "
                                f"(missing: {', '.join(missing)})",
                                "run a full `inv deploy` (it creates the missing nodes; update-only never creates "
                                "droplets), or set NODES to the number that exist", exit_code=EXIT_CONFIG)
        message = (f"the swarm has {len(found)} nodes but NODES is {spec.nodes} "
                   f"({', '.join(n.name for n in extra)} beyond it)")
        if extra and exact:
            raise OperatorError(message, "a new node count is a full `inv deploy` (it drains the surplus nodes "
                                f"out of the swarm and deletes them), or set NODES={len(found)}",
                                exit_code=EXIT_CONFIG)
        nodes = [by_name[name] for name in names] + extra
        refuse_shared_addresses(nodes)
        steps.record_target(run, nodes[0])
        step.note(", ".join(f"{n.name} at {n.public_ipv4}" for n in nodes))
        if extra:
            step.warn(f"{message}; every node is checked: " + step.step.message)
    return nodes


def plan(run: Run, settings: Settings, update_only: bool, edges: Edges) -> deploy_plan.DeployPlan:
    """What `inv deploy --nodes N` would do, changing nothing: the cluster's droplets (GET
    requests only) and node 1's release plan (commands that only read). On the swarm a service
    the release plan "recreates" is one Swarm rolls, start-first."""
    settings.require("DOMAIN")
    spec = wiring.cloud_spec(settings, need_key=False)
    steps.token_check(run, edges.cloud, spec)
    require_stack_keys(settings)
    local = wiring.local_release(settings)
    compose, env = wiring.compose_spec(settings), settings.stack_env_file()
    with run.step("plan-cluster") as step:
        cluster = edges.cloud.plan_cluster(spec, on_event=lambda level, msg: run.log(msg))
        step.note(f"{sum(1 for _, d in cluster.nodes if d)} of {len(cluster.nodes)} nodes exist"
                  + (f", {len(cluster.surplus)} surplus" if cluster.surplus else ""))
    name, leader = cluster.nodes[0]
    releases: list[deploy_plan.ReleasePlan] = []
    if leader is None:
        releases.append(deploy_plan.release_plan(name, local, deploy_plan.LiveState(), compose, env, update_only))
    elif not leader.public_ipv4:
        run.mark_partial("the release plan", f"node {name} has no public IPv4 address to read it from")
    else:
        steps.record_target(run, leader)
        inventory = wiring.inventory(settings, _hosts([leader]), edges)
        try:
            target = inventory.targets[0]
            try:
                steps.connect(run, target, quick=True)
                releases.append(steps.plan_release(run, target, local, compose, env, update_only))
            except OperatorError as exc:
                run.mark_partial(f"the release plan for {target.name}", f"{exc.message} ({exc.hint})")
        finally:
            inventory.close()
    result = deploy_plan.DeployPlan(mode="update" if update_only else "full", provision=None, releases=releases,
                                    cluster=cluster)
    deploy_plan.publish(run, result)
    return result


def _hosts(nodes: Sequence[cloud.DropletInfo]) -> list[Host]:
    return [Host(name=n.name, ip=n.public_ipv4 or "", droplet_id=n.id, region=n.region) for n in nodes]


def shrink(run: Run, leader: Target, leaving: Inventory, surplus: Sequence[cloud.DropletInfo],
           settings: Settings, spec: cloud.CloudSpec, cloud_port) -> None:
    """The nodes beyond NODES: their tasks moved start-first to the others, out of the swarm,
    then their droplets deleted. Node 1 (data, edge) is never among them."""
    with run.step("shrink") as step:
        removed = swarm.retire(leader, [swarm.Leaving(t.name, t) for t in leaving], settings.project,
                               timeout=float(settings["HEALTH_TIMEOUT"]), on_event=run.log)
        deleted = cloud_port.delete_surplus(spec, surplus, on_event=lambda level, msg: run.log(msg))
        run.record("shrink", {"left_swarm": removed, "deleted": deleted})
        step.note(f"{len(removed)} node(s) left the swarm, {len(deleted)} droplet(s) deleted: "
                  + ", ".join(deleted or removed or ["none"]))


def _reach_leaving(run: Run, leaving: Inventory) -> None:
    """A node about to be removed is asked to leave the swarm itself; one that does not answer is
    removed from the leader's side alone."""
    for target in leaving:
        try:
            steps.connect(run, target, quick=True)
        except OperatorError as exc:
            run.warn(f"{target.name} (being removed) cannot be reached ({exc.message}): the swarm drops it "
                     "without it leaving; its droplet is deleted all the same")


def deploy(run: Run, settings: Settings, update_only: bool, edges: Edges) -> None:
    settings.require("DOMAIN")
    spec = wiring.cloud_spec(settings, need_key=not update_only)
    account = steps.token_check(run, edges.cloud, spec)
    require_stack_keys(settings)
    local = wiring.local_release(settings)
    surplus: tuple[cloud.DropletInfo, ...] = ()
    if update_only:
        nodes = find_nodes(run, edges.cloud, spec)
    else:
        cluster = provision_cluster(run, edges.cloud, spec, account, settings.known_hosts_path)
        nodes, surplus = list(cluster.nodes), cluster.surplus
    hosts = _hosts(nodes)
    private = {n.name: n.private_ipv4 or "" for n in nodes}
    inventory = wiring.inventory(settings, hosts, edges)
    leaving = wiring.inventory(settings, _hosts(surplus), edges) if surplus else None
    try:
        for target in inventory:
            steps.connect(run, target)
            if not update_only:
                steps.bootstrap(run, target, settings["CLOUD_INIT_TIMEOUT"])
        if leaving is not None:
            _reach_leaving(run, leaving)
        leader = inventory.targets[0]
        compose = wiring.compose_spec(settings)
        try:
            with steps.locked(run, leader, local.release_id, settings["LOCK_WAIT"]):
                form_swarm(run, [swarm.Node(t, private[t.name]) for t in inventory])
                pushed = steps.push(run, leader, local, settings.stack_env_file(), settings["MIN_FREE_MB"])
                image_map = steps.build(run, leader, compose, pushed, local.compose,
                                        pushed.changed_services if update_only else None)
                with registry_login(run, spec, settings["REGISTRY_NAME"], leader) as (prefix, config_dir):
                    steps.switch(run, leader, pushed.release_id)
                    stack_up(run, leader, settings, pushed.release_id, pushed.previous_release, image_map, prefix,
                             config_dir, len(hosts), lambda: pull_only_login(run, spec, leader, config_dir))
                if leaving is not None:
                    shrink(run, leader, leaving, surplus, settings, spec, edges.cloud)
                steps.prune(run, leader, settings["RELEASES_KEEP"])
        except OperatorError:
            try:
                collect(run, settings, inventory)
            except Exception as exc:  # noqa: BLE001 - the original failure is what gets reported
                run.warn(f"could not collect the swarm's state after the failure: {exc}")
            raise
        verify(run, settings, edges, hosts, inventory)
    finally:
        inventory.close()
        if leaving is not None:
            leaving.close()


def verify(run: Run, settings: Settings, edges: Edges, hosts: Sequence[Host], inventory: Inventory) -> None:
    report = steps.run_checks(run, edges.run_checks, wiring.check_target(settings, hosts[0].ip),
                              wiring.checks_config(settings))
    services = collect(run, settings, inventory)
    down = steps.not_serving(services) + [f"node {n}" for n in nodes_down(inventory.targets[0])]
    failed = report.by_status("fail")
    if failed or down:
        problems = ([f"{len(failed)} check(s) failed: " + ", ".join(r.name for r in failed)] if failed else []) \
            + (["not running all their replicas or down: " + ", ".join(down)] if down else [])
        raise steps.CheckFailures("; ".join(problems), "swarm-services.json, swarm-nodes.json and swarm-tasks.txt "
                                  "in the run folder show which tasks are missing and why")


def verify_only(run: Run, settings: Settings, edges: Edges) -> None:
    """Checks against node 1, then the swarm's state and every node's; a node that cannot be
    reached is reported (and the set marked partial), not a crash."""
    settings.require("DOMAIN")
    spec = wiring.cloud_spec(settings, need_key=False)
    steps.token_check(run, edges.cloud, spec)
    hosts = _hosts(find_nodes(run, edges.cloud, spec, exact=False))
    inventory = wiring.inventory(settings, hosts, edges)
    try:
        for target in inventory:
            try:
                steps.connect(run, target, quick=True)
            except OperatorError as exc:
                run.mark_partial(f"node {target.name}", exc.message)
        if not inventory.targets[0].connected:
            run.skip_step("collect", f"the leader {inventory.targets[0].name} cannot be reached")
            report = steps.run_checks(run, edges.run_checks, wiring.check_target(settings, hosts[0].ip),
                                      wiring.checks_config(settings))
            if report.by_status("fail"):
                raise steps.CheckFailures(f"{len(report.by_status('fail'))} check(s) failed",
                                          "each check's observed value is in summary.md and http/")
            return
        verify(run, settings, edges, hosts, inventory)
    finally:
        inventory.close()


def rollback(run: Run, settings: Settings, release: str | None, edges: Edges, choose) -> None:
    """A previous successful release's stack file again (its images are in the registry): Swarm
    rolls each service that differs back, start-first."""
    spec = wiring.cloud_spec(settings, need_key=False)
    steps.token_check(run, edges.cloud, spec)
    hosts = _hosts(find_nodes(run, edges.cloud, spec))
    inventory = wiring.inventory(settings, hosts, edges)
    try:
        for target in inventory:
            steps.connect(run, target)
        leader = inventory.targets[0]
        with steps.locked(run, leader, release or "(previous)", settings["LOCK_WAIT"]):
            with run.step("choose-release") as step:
                current, chosen = choose(leader, release)
                stack_path = leader.layout.release(chosen.id) + "/" + swarm_release.STACK_FILE
                if not leader.run(f"test -f {stack_path}", check=False).ok:
                    raise OperatorError(f"release {chosen.id} never ran on the swarm (it has no {swarm_release.STACK_FILE})",
                                        "pick a release deployed with NODES > 1 from `inv releases`")
                step.note(f"{current or '(none)'} -> {chosen.id}")
            with registry_login(run, spec, settings["REGISTRY_NAME"], leader, read_write=False) as (_prefix, config_dir):
                steps.switch(run, leader, chosen.id)
                with run.step("stack-up") as step:
                    try:
                        since = swarm_release.deploy(leader, config_dir, stack_path, settings.project)
                        states = swarm.wait_rollout(leader, settings.project, since, float(settings["HEALTH_TIMEOUT"]))
                    except OperatorError:
                        if current:
                            sync.switch(leader, current)
                        raise
                    step.note(f"{len(states)} services running their replicas")
            if current and current != chosen.id:
                sync.record_outcome(leader, current, "rolled-back")
        verify(run, settings, edges, hosts, inventory)
    finally:
        inventory.close()
