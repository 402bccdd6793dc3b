"""What each task does, as a sequence of steps, written once for one droplet and for N.

Every flow takes the Run, the Settings and the Edges (real by default). The cluster a task acts
on is found or made first (reach.py); what differs between Docker Compose on one droplet and a
Docker Swarm on N is the runtime's (deploy/runtime/).
"""
from __future__ import annotations

from deploy import steps, wiring
from deploy.flows import reach
from deploy.flows.backup import RestoreTarget, backup_now, list_backups, recover, restore
from deploy.flows.destroy import destroy
from deploy.flows.inspect import collect_only, list_releases, lock_release, lock_status, verify, verify_only
from deploy.flows.logs import logs
from deploy.flows.plan import plan
from deploy.flows.prune import prune
from deploy.flows.release import deploy, push_only, up_only
from deploy.flows.rollback import rollback
from deploy.flows.shell import django_shell, exec_in, manage
from deploy.flows.ssh_key import rotate_ssh_key
from deploy.flows.status import status
from deploy.report.run import Run
from deploy.settings import Settings
from deploy.wiring import REAL_EDGES, Edges

__all__ = ["RestoreTarget", "backup_now", "collect_only", "deploy", "destroy", "django_shell", "exec_in", "list_backups",
           "list_releases", "lock_release", "lock_status", "logs", "manage", "plan", "provision_only", "prune", "push_only",
           "recover", "restore", "rollback", "rotate_ssh_key", "status", "up_only", "verify", "verify_only"]


def provision_only(run: Run, settings: Settings, edges: Edges = REAL_EDGES, wait: bool = True) -> None:
    """Droplet(s), firewall allowlist and DNS, then (``wait``) every node ready to take a release
    (cloud-init finished, Docker answering for the deploy user): `inv push` can follow."""
    settings.require("DOMAIN")
    account = steps.token_check(run, edges.cloud, wiring.cloud_spec(settings))
    cluster = reach.provision(run, settings, edges, account)
    if not wait:
        run.skip_step("bootstrap", "--no-wait: `inv push` and `inv up` wait for cloud-init themselves")
        return
    with reach.connected(run, settings, edges, cluster.nodes) as inventory:
        reach.settle(run, settings, inventory, new=True)
