"""`inv deploy --plan`: what a deploy (or --update-only) would do, changing nothing: GET
requests only to DigitalOcean, commands that only read on the leader, and no deploy lock (the
plan says who holds it). The same checks as a deploy come first, so a plan also finds what
would stop one."""
from __future__ import annotations

import dataclasses

from core.errors import OperatorError
from deploy import plan as deploy_plan
from deploy import steps, wiring
from deploy.cluster import Node, wanted_count
from deploy.flows import reach
from deploy.report.run import Run
from deploy.settings import Settings, require_stack_keys
from deploy.wiring import REAL_EDGES, Edges


def plan(run: Run, settings: Settings, update_only: bool = False, edges: Edges = REAL_EDGES) -> deploy_plan.DeployPlan:
    settings.require("DOMAIN")
    spec = wiring.cloud_spec(settings, need_key=False)
    account = steps.token_check(run, edges.cloud, spec) if not update_only or (settings.nodes or 1) > 1 else None
    require_stack_keys(settings)
    local = wiring.local_release(settings)
    compose, env = wiring.compose_spec(settings), settings.stack_env_file()
    provision = cluster = None
    leader: Node | None = None
    name = spec.droplet_name
    count = (wanted_count(settings.nodes, len(edges.cloud.find_cluster(spec)), name, settings.project)
             if account else 1)
    if count > 1:
        with run.step("plan-cluster") as step:
            cluster = edges.cloud.plan_cluster(dataclasses.replace(spec, nodes=count),
                                               on_event=lambda level, msg: run.log(msg))
            step.note(f"{sum(1 for _, d in cluster.nodes if d)} of {len(cluster.nodes)} nodes exist"
                      + (f", {len(cluster.surplus)} surplus" if cluster.surplus else ""))
        name, found = cluster.nodes[0]
        if found is not None:
            steps.record_target(run, found)
            leader = Node.of(found)
    elif update_only:
        leader = reach.find(run, settings, edges).leader
    else:
        assert account is not None
        provision = steps.plan_provision(run, edges.cloud, wiring.cloud_spec(settings), account)
        if provision.droplet is not None:
            leader = Node.of(provision.droplet)
    releases: list[deploy_plan.ReleasePlan] = []
    if leader is None:   # still to be created: everything is new
        releases.append(deploy_plan.release_plan(name, local, deploy_plan.LiveState(), compose, env, update_only))
    elif not leader.ip:
        run.mark_partial("the release plan", f"droplet {leader.name} has no public IPv4 address to read it from; "
                                             "check its networking in the DigitalOcean console")
    else:
        inventory = wiring.inventory(settings, (leader,), edges)
        try:
            target = inventory.targets[0]
            try:
                steps.connect(run, target, quick=True)
                # the env file a push would write: with what the deployer fills from the live release's
                env = steps.release_env(run, target, settings)[0]
                releases.append(steps.plan_release(run, target, local, compose, env, update_only))
            except OperatorError as exc:
                run.mark_partial(f"the release plan for {target.name}", f"{exc.message} ({exc.hint})")
        finally:
            inventory.close()
    result = deploy_plan.DeployPlan(mode="update" if update_only else "full", provision=provision,
                                    releases=releases, cluster=cluster)
    deploy_plan.publish(run, result)
    return result
