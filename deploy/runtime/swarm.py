"""N droplets: the release runs as a Docker Swarm stack.

Images are built once on node 1 (the leader), pushed to the account's container registry, and
the stack file written from compose's model of the release is deployed with `docker stack
deploy`; Swarm rolls each changed service start-first and rolls it back itself when the new
tasks fail. Node 1 keeps its name, so growing from one droplet keeps it: its Compose stack is
stopped (volumes kept) the first time the stack starts under Swarm.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Iterator, Sequence

from core.errors import OperatorError
from deploy import cloud, live_secrets, migrations, steps, wiring
from deploy.cloud import registry
from deploy.cluster import Cluster
from deploy.report.run import Run
from deploy.runtime.base import Candidate
from deploy.settings import Settings
from deploy.wiring import Edges, Inventory
from remote import backup as backup_cmd
from remote import collect as remote_collect
from remote import commands as cmd
from remote import compose, logs, oneoff, registry_cmds, stackfile, status, swarm, swarm_release, sync
from remote.host import Host


class SwarmRuntime:
    name = "swarm"
    down_hint = "swarm-services.json, swarm-nodes.json and swarm-tasks.txt in the run folder show which tasks are missing and why"

    def __init__(self, settings: Settings, edges: Edges, cluster: Cluster) -> None:
        self.settings = settings
        self.edges = edges
        self.cluster = cluster
        self.project = settings.project
        # the count is the cluster's (NODES may be unset): delete_surplus deletes beyond it
        self.spec = dataclasses.replace(wiring.cloud_spec(settings, need_key=False), nodes=len(cluster.nodes))
        self.timeout = float(settings.health_timeout)
        self.compose_file = sync.read_compose(settings.stack_dir / "compose.yml")

    def database(self) -> tuple[str, ...]:
        return self.service_filters("postgres")

    def service_filters(self, service: str) -> tuple[str, ...]:
        return (f"label=com.docker.swarm.service.name={self.project}_{service}",)

    def prepare(self, run: Run, inventory: Inventory) -> None:
        """Form the swarm over the VPC (idempotent: joins new nodes, reconciles manager roles)."""
        private = {n.name: n.private_ip for n in self.cluster.nodes}
        with run.step("swarm") as step:
            result = swarm.form([swarm.Member(t, private[t.name]) for t in inventory], run.registry.add_value, run.log)
            run.record("swarm", {"managers": list(result.managers), "workers": list(result.workers),
                                 "joined": list(result.joined)})
            step.note(f"{len(result.managers)} manager(s), {len(result.workers)} worker(s)"
                      + (f"; joined {', '.join(result.joined)}" if result.joined else ""))

    def go_live(self, run: Run, leader: Host, release: Candidate) -> None:
        if not release.publish:
            self._redeploy(run, leader, release.release_id, release.live)
            return
        if release.migrate:
            self._migrate(run, leader, release)
        with self._registry_login(run, leader) as (prefix, config_dir), \
                live_secrets.applied(run, leader, release.live, release.release_id, self.service_filters):
            steps.switch(run, leader, release.release_id)
            self._stack_up(run, leader, release, prefix, config_dir)

    def restart(self, run: Run, leader: Host, release_id: str, images: dict[str, dict[str, str]]) -> None:
        self._redeploy(run, leader, release_id, release_id)

    def can_return_to(self, leader: Host, release_id: str, images: dict[str, dict[str, str]]) -> str | None:
        if leader.run(f"test -f {self._stack_path(leader, release_id)}", check=False).ok:
            return None
        return f"it never ran on the swarm (it has no {swarm_release.STACK_FILE})"

    def retire(self, run: Run, leader: Host) -> None:
        """The nodes beyond NODES: their tasks moved start-first to the others, out of the swarm,
        then their droplets deleted. Node 1 (data, edge) is never among them. A node that does
        not answer is removed from the leader's side alone."""
        surplus = self.cluster.surplus
        if not surplus:
            return
        leaving = wiring.inventory(self.settings, surplus, self.edges, run.command_timer)
        try:
            for target in leaving:
                try:
                    steps.connect(run, target, quick=True)
                except OperatorError as exc:
                    run.warn(f"{target.name} (being removed) cannot be reached ({exc.message}): the swarm drops it "
                             "without it leaving; its droplet is deleted all the same")
            with run.step("shrink") as step:
                removed = swarm.retire(leader, [swarm.Leaving(t.name, t) for t in leaving], self.project,
                                       timeout=self.timeout, on_event=run.log)
                droplets = [cloud.DropletInfo(id=n.droplet_id or 0, name=n.name, region=n.region or "", size="",
                                              status="active", public_ipv4=n.ip or None, created=False,
                                              private_ipv4=n.private_ip or None) for n in surplus]
                deleted = self.edges.cloud.delete_surplus(self.spec, droplets,
                                                          on_event=lambda level, msg: run.log(msg))
                run.record("shrink", {"left_swarm": removed, "deleted": deleted})
                step.note(f"{len(removed)} node(s) left the swarm, {len(deleted)} droplet(s) deleted: "
                          + ", ".join(deleted or removed or ["none"]))
        finally:
            leaving.close()

    def inspect(self, run: Run, inventory: Inventory) -> list[str]:
        """The swarm from the leader (nodes, services, tasks) plus each node's own state. A node
        that cannot be reached is reported and skipped."""
        leader = inventory.targets[0]
        with run.step("collect") as step:
            result = remote_collect.collect_swarm(leader, self.project, run.artifacts.write_text)
            steps.unread_services(run, leader.name, result)
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
        listed = swarm.json_lines(leader.run(swarm.nodes_command(), check=False).stdout)
        nodes_down = sorted(f"node {n.get('Hostname')} ({n.get('Status')})" for n in listed
                            if n.get("Status") != "Ready")
        return steps.not_serving(result.services) + nodes_down

    def snapshot(self, leader: Host) -> status.Snapshot:
        """The swarm as its leader sees it: every node's tasks come with the node they run on."""
        res = leader.run(status.swarm_probe(leader.layout, self.project), "reading what runs",
                         check=False, timeout=60)
        return status.parse_swarm(res.stdout, self.project)

    def logs_command(self, leader: Host, request: logs.LogRequest) -> str:
        return logs.swarm_command(self.project, request)

    def one_off_command(self, leader: Host, service: str, argv: Sequence[str], tty: bool,
                        beside: str | None = None) -> str:
        return oneoff.swarm_one_off(self.project, service, argv, tty, beside=beside)

    def stop_command(self, leader: Host, services: Sequence[str]) -> str:
        return backup_cmd.swarm_stop(self.project, services)

    def database_one_off(self, leader: Host, entrypoint: str, argv: Sequence[str] = (),
                         release_id: str | None = None) -> str:
        """The live postgres service's spec (a release not yet deployed has none on a swarm: a
        disaster recovery restores onto one droplet first, deploy/flows/backup.py)."""
        return backup_cmd.swarm_one_off(self.project, entrypoint, argv)

    # -- the pieces ---------------------------------------------------------------------------------

    def _migrate(self, run: Run, leader: Host, release: Candidate) -> None:
        """The release's migration before Swarm rolls anything: a one-off container of its image
        (built on the leader) with the live service's env, on the network it shares with the
        database. The stack's first start on the swarm has no live service to take them from:
        the service's own start applies them."""
        found = compose.migration(self.compose_file)
        if found and release.live and not leader.run(oneoff.swarm_service_exists(self.project, found[0]),
                                                     check=False).ok:
            run.skip_step("migrate", f"the stack's first start on the swarm: {found[0]}'s start applies the migrations")
            return

        def one_off(service: str, argv: list[str], what: str):
            ref = (release.images.get(service) or {}).get("ref")
            return leader.run(oneoff.swarm_one_off(self.project, service, argv, tty=False, image=ref,
                                                   beside=backup_cmd.SERVICE), what, check=False,
                              timeout=self.timeout + 300)

        migrations.migrate(
            run, leader, release, self.compose_file,
            plan=lambda service, argv: compose.read_plan(
                one_off(service, compose.plan_argv(argv), "listing the migrations to apply"), service,
                compose.plan_argv(argv)),
            apply=lambda service, argv: compose.read_migration(one_off(service, argv, "migrating"), service, argv))

    def _stack_path(self, leader: Host, release_id: str) -> str:
        return leader.layout.release(release_id) + "/" + swarm_release.STACK_FILE

    @contextmanager
    def _registry_login(self, run: Run, leader: Host, read_write: bool = True) -> Iterator[tuple[str, str]]:
        """(image prefix, config folder): the leader's docker client logged in to the account's
        registry for the block (read-write to push; a rollback only pulls), logged out after it
        (the swarm keeps the auth it was handed by `stack deploy --with-registry-auth` for its
        pulls; nothing stays on the leader's disk)."""
        with run.step("registry") as step:
            info = registry.ensure_registry(self.spec, self.settings.registry_name,
                                            on_event=lambda level, msg: run.log(msg))
            login = registry.docker_credentials(self.spec, registry=run.registry, read_write=read_write)
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

    def _pull_only_login(self, run: Run, leader: Host, config_dir: str) -> None:
        """Replace the push's read-write login with a read-only one that never expires: it is what
        `stack deploy --with-registry-auth` hands every node, kept for every later pull (a task
        rescheduled after a node's loss pulls again), so it must not be able to push."""
        login = registry.docker_credentials(self.spec, registry=run.registry, read_write=False)
        registry_cmds.login(leader, config_dir, login.server, login.auth.reveal())

    def _stack_up(self, run: Run, leader: Host, release: Candidate, prefix: str, config_dir: str) -> None:
        """Push the images, write the stack file from compose's model of the release, deploy it
        and wait for Swarm's rollout. On failure `current` goes back to the live release."""
        spec = wiring.compose_spec(self.settings)
        with run.step("stack-up") as step:
            with self._back_on_failure(run, leader, release.release_id, release.live):
                local = {name: entry["ref"] for name, entry in release.images.items()}
                refs = swarm_release.registry_refs(local, lambda repo, tag: f"{prefix}/{repo}:{tag}")
                swarm_release.publish(leader, config_dir, local, refs)
                stack = stackfile.swarm_stack(swarm_release.normalized_config(leader, spec), refs,
                                              nodes=len(self.cluster.nodes))
                path = swarm_release.write_stack(leader, release.release_id, stack)
                self._pull_only_login(run, leader, config_dir)
                if leader.run(cmd.service_containers(self.project, "traefik"), check=False).stdout.strip():
                    # the first start under Swarm on a droplet that ran Compose: ports 80/443 must be free
                    leader.run(f"docker compose -p {self.project} down --remove-orphans", "stopping the Compose "
                               "stack (volumes kept) before Swarm takes over", timeout=600)
                states = self._deploy_and_wait(run, leader, config_dir, path)
            sync.record_outcome(leader, release.release_id, "success")
            summary = {name: f"{s.running}/{s.desired}" for name, s in sorted(states.items())}
            run.record("stack-up", {"services": summary, "images": refs})
            run.record("live_release", release.release_id)
            step.note(f"{len(states)} services running their replicas")

    def _redeploy(self, run: Run, leader: Host, release_id: str, live: str | None) -> None:
        """A release's own stack file again (its images are in the registry): Swarm rolls each
        service that differs, start-first (a rollback; `inv up` of the live release)."""
        with self._registry_login(run, leader, read_write=False) as (_prefix, config_dir), \
                live_secrets.applied(run, leader, live, release_id, self.service_filters):
            if release_id != live:
                steps.switch(run, leader, release_id)
            with run.step("stack-up") as step:
                with self._back_on_failure(run, leader, release_id, live, record=release_id != live):
                    states = self._deploy_and_wait(run, leader, config_dir, self._stack_path(leader, release_id))
                sync.record_outcome(leader, release_id, "success")
                run.record("live_release", release_id)
                step.note(f"{len(states)} services running their replicas")

    def _deploy_and_wait(self, run: Run, leader: Host, config_dir: str, path: str) -> dict:
        since = swarm_release.deploy(leader, config_dir, path, self.project)
        project = self.project
        return swarm.wait_rollout(leader, project, since, timeout=self.timeout,
                                  on_change=lambda s: run.log("swarm: " + ", ".join(
                                      f"{v.name.removeprefix(project + '_')} {v.running}/{v.desired}"
                                      for v in sorted(s.values(), key=lambda v: v.name))))

    @contextmanager
    def _back_on_failure(self, run: Run, leader: Host, release_id: str, live: str | None,
                         record: bool = True) -> Iterator[None]:
        """A failed rollout: the release is marked failed and `current` names the live one again
        (Swarm has already put its tasks back)."""
        try:
            yield
        except (OperatorError, ValueError) as exc:
            if record:
                sync.record_outcome(leader, release_id, "failed")
            if live and live != release_id:
                sync.switch(leader, live)
                run.log(f"current -> {live} again")
            if isinstance(exc, swarm.RolloutFailed):
                run.artifacts.write_text(f"{leader.artifact_prefix}swarm-tasks.txt", leader.run(
                    swarm.tasks_command(self.project, as_json=False), check=False).output)
            if isinstance(exc, ValueError):
                raise OperatorError(f"the stack cannot run on a swarm: {exc}",
                                    "fix stack/compose.yml (see docs/scaling-out.md), or deploy with NODES=1") from None
            raise
