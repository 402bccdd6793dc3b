"""What differs between one droplet and N: the runtime that runs a release on the cluster.

One droplet runs Docker Compose (``ComposeRuntime``); N droplets form a Docker Swarm
(``SwarmRuntime``). The task flows (deploy/flows/) are written once against ``Runtime``; which
one a run gets follows from the cluster it found or made (``for_cluster``), so no task can
treat a swarm as a Compose droplet.
"""
from __future__ import annotations

from deploy.cluster import Cluster
from deploy.runtime.base import Candidate, Runtime
from deploy.runtime.compose import ComposeRuntime
from deploy.runtime.swarm import SwarmRuntime
from deploy.settings import Settings
from deploy.wiring import Edges

__all__ = ["Candidate", "Runtime", "ComposeRuntime", "SwarmRuntime", "for_cluster"]


def for_cluster(cluster: Cluster, settings: Settings, edges: Edges) -> Runtime:
    if cluster.is_swarm:
        return SwarmRuntime(settings, edges, cluster)
    return ComposeRuntime(settings)
