"""`inv status`: one screen (or one JSON document) of how the stack is, fast: the cloud's view of
the droplets, one command on the leader for everything that runs (remote/status.py), a one-line
disk check on the other nodes side by side, the certificate read from here meanwhile, and the
last deploy from this machine's run folders.

Exit 0 healthy, 1 degraded (a service unhealthy, stopped, restarting, short of replicas; a node
down; nothing live), 2 could not tell (no droplet yet, the leader not answering SSH: then the
cloud's view alone is shown).
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TextIO

from core.errors import OperatorError
from deploy import steps, wiring
from deploy.cluster import Cluster
from deploy.flows import live
from deploy.report.run import Run
from deploy.report.runs import last_run
from deploy.runtime import for_cluster
from deploy.settings import Settings
from deploy.status import DEGRADED, UNKNOWN, DropletRow, StatusReport
from deploy.tls import CertificateInfo
from deploy.wiring import REAL_EDGES, Edges, Inventory
from remote import status as remote_status
from remote.host import Host

DEPLOY_TASKS = ("deploy", "up", "rollback")     # the runs that put a release live
CERT_TIMEOUT_S = 3.0


class NotHealthy(OperatorError):
    """The report is printed; the run ends with its exit code (1 degraded, 2 could not tell)."""


def status(run: Run, settings: Settings, edges: Edges = REAL_EDGES, as_json: bool = False,
           out: TextIO | None = None) -> StatusReport:
    out = out or sys.stdout
    report = StatusReport(project=settings.project, runtime="compose", checked_at=datetime.now(timezone.utc))
    report.last_deploy = last_run(settings.logs_dir, DEPLOY_TASKS, skip_modes=("-plan",))
    try:
        cluster = live.find(run, settings, edges)
    except OperatorError as exc:       # no droplet yet (exit 2), the token refused (3): the report says why
        report.errors.append(exc.message)
        _publish(run, report, as_json, out)
        raise
    report.runtime = "swarm" if cluster.is_swarm else "compose"
    with ThreadPoolExecutor(max_workers=max(2, len(cluster.nodes))) as pool:
        cert = pool.submit(_certificate, settings, edges, cluster) if settings.domain else None
        inventory = wiring.inventory(settings, cluster.nodes, edges)
        try:
            reachable = _read_leader(run, settings, edges, cluster, inventory, report)
            disks = _other_disks(run, inventory, pool) if reachable else {}
        finally:
            inventory.close()
        report.certificate = _outcome(cert, report, "certificate")
    leader_disk = report.snapshot.disk if report.snapshot else None
    # the leader: did SSH answer; another node: was its disk read (not tried when the leader is out)
    answered = {n.name: (n.name in disks if reachable else None) for n in cluster.nodes[1:]}
    report.droplets = [DropletRow(name=n.name, ip=n.ip, region=n.region or "", status=n.status, role=n.role,
                                  reachable=reachable if k == 0 else answered[n.name],
                                  disk=leader_disk if k == 0 else disks.get(n.name))
                       for k, n in enumerate(cluster.nodes)]
    _publish(run, report, as_json, out)
    if report.health == DEGRADED:
        raise NotHealthy("degraded: " + "; ".join(report.problems),
                         "`inv logs SERVICE` shows why a service stopped; `inv up` starts the live release's "
                         "stopped services again", exit_code=report.exit_code, outcome="failed")
    if report.health == UNKNOWN:
        raise NotHealthy("could not tell how the stack is: " + "; ".join(report.errors),
                         "the droplets above are what DigitalOcean shows; check SSH from this machine "
                         "(`inv provision` updates the firewall allowlist)", exit_code=report.exit_code,
                         outcome="partial")
    return report


def _read_leader(run: Run, settings: Settings, edges: Edges, cluster: Cluster, inventory: Inventory,
                 report: StatusReport) -> bool:
    """The leader's snapshot into the report; False when it cannot be reached."""
    leader = inventory.targets[0]
    try:
        steps.connect(run, leader, quick=True)
    except OperatorError as exc:
        report.errors.append(f"SSH to {leader.name}: {exc.message}")
        return False
    report.snapshot = live.snapshot(run, for_cluster(cluster, settings, edges), leader)
    report.errors += list(report.snapshot.errors)
    return True


def _other_disks(run: Run, inventory: Inventory, pool: ThreadPoolExecutor) -> dict[str, remote_status.Disk]:
    """A swarm's other nodes: connect and read the disk side by side (one round trip each, at once).
    A node that does not answer is noted, not a failure: the swarm's own view of it is in the snapshot."""
    def disk(host: Host) -> remote_status.Disk | None:
        host.open(quick=True)
        res = host.run(remote_status.disk_command(host.layout), "reading the free disk", check=False, timeout=20)
        return remote_status.parse_disk(res.stdout)
    futures = {t.name: pool.submit(disk, t) for t in inventory.targets[1:]}
    found: dict[str, remote_status.Disk] = {}
    for name, future in futures.items():
        try:
            value = future.result()
        except OperatorError as exc:
            run.warn(f"{name}: its free disk could not be read ({exc.message})")
            continue
        if value is not None:
            found[name] = value
    return found


def _certificate(settings: Settings, edges: Edges, cluster: Cluster) -> CertificateInfo:
    return edges.certificate(wiring.check_target(settings, cluster.leader.ip), CERT_TIMEOUT_S)


def _outcome(future: Future | None, report: StatusReport, what: str) -> CertificateInfo | None:
    if future is None:
        return None
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - the certificate is one line of the report, not its verdict
        report.errors.append(f"{what}: could not be read ({type(exc).__name__}: {str(exc)[:200]})")
        return None


def _publish(run: Run, report: StatusReport, as_json: bool, out: TextIO) -> None:
    """The screen or the JSON on stdout; both into the run folder (redacted, as every file)."""
    data = report.to_json()
    screen = report.render()
    run.artifacts.write_json("status.json", data)
    run.artifacts.write_text("status.txt", screen)
    run.record("status", {"health": report.health, "problems": report.problems, "errors": report.errors})
    out.write(json.dumps(data, indent=2) + "\n" if as_json else screen)
    out.flush()
