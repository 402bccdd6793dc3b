"""DigitalOcean adapter: the only package that imports `digitalocean`.

Pure data in (CloudSpec), pure data out (ProvisionResult, ClusterResult); typed errors
(CloudError and subclasses) carry a message and an actionable hint and never the token. The rest
of the code uses the names below as `cloud.X`; each is made in the module of its job:
api (CloudSpec, the errors, `_call`: every API request with bounded retries; the token check),
tags (the cluster tag, operators' presence tags), droplets, keys (our SSH key, and its replacement), firewall,
allowlist (operators announced on the droplet -> SSH rules), dns, provision (one droplet, and its
plan), cluster (N droplets in one VPC behind one firewall, and its plan) and teardown (what this
stack made, found and removed: `inv destroy`).
"""
from deploy.cloud.api import (TOKEN_HINT, AccountInfo, CloudError, CloudSpec, CloudUnavailable, ConcurrentDeploy,
                              TokenMissing, TokenRejected, check_token)
from deploy.cloud.cluster import (ClusterPlan, ClusterResult, delete_surplus, find_cluster, node_names,
                                  plan_cluster, provision_cluster)
from deploy.cloud.dns import DnsResult, dns_hosts
from deploy.cloud.droplets import DropletInfo, find_droplet
from deploy.cloud.firewall import FirewallResult, swarm_rules
from deploy.cloud.keys import KeyChange, replace_ssh_key
from deploy.cloud.provision import FirewallPlan, ProvisionPlan, ProvisionResult, plan_provision, provision
from deploy.cloud.tags import cluster_tag, now_s, parse_presence, presence_tag
from deploy.cloud.teardown import Item, Kept, StackInventory, remove_stack, stack_inventory

__all__ = [
    "TOKEN_HINT", "AccountInfo", "CloudError", "CloudSpec", "CloudUnavailable", "ConcurrentDeploy", "TokenMissing",
    "TokenRejected", "check_token",
    "ClusterPlan", "ClusterResult", "delete_surplus", "find_cluster", "node_names", "plan_cluster",
    "provision_cluster",
    "DnsResult", "dns_hosts",
    "DropletInfo", "find_droplet",
    "FirewallResult", "swarm_rules",
    "KeyChange", "replace_ssh_key",
    "FirewallPlan", "ProvisionPlan", "ProvisionResult", "plan_provision", "provision",
    "cluster_tag", "now_s", "parse_presence", "presence_tag",
    "Item", "Kept", "StackInventory", "remove_stack", "stack_inventory",
]
