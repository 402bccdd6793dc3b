"""Settings -> the objects the steps work with: cloud spec, targets, compose and checks specs.

The only module that reads Settings on behalf of the steps. ``Edges`` names the three places
where a run leaves this process (the DigitalOcean API, SSH, the public site: HTTP checks and the
certificate it serves); production uses the real ones, the orchestration tests hand in fakes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Protocol, Sequence

from core.errors import ConfigError
from deploy import acme, backup_config, checks, cloud, resolvers
from deploy.cluster import Node
from deploy.report.run import operator_name
from deploy.settings import Settings
from deploy.tls import CertificateInfo
from remote import connection, sync
from remote.collect import CollectSpec
from remote.compose import ComposeSpec
from remote.layout import ReleaseLayout
from remote.host import Executor, Host

NONPROD_OVERRIDE = "compose.nonprod.yml"


class CloudPort(Protocol):
    def check_token(self, spec: cloud.CloudSpec) -> cloud.AccountInfo: ...

    def provision(self, spec: cloud.CloudSpec, on_event: Any = ..., account: Any = None,
                  on_droplet: Any = None) -> cloud.ProvisionResult: ...

    def plan_provision(self, spec: cloud.CloudSpec, on_event: Any = ..., account: Any = None) -> cloud.ProvisionPlan: ...

    def plan_cluster(self, spec: cloud.CloudSpec, on_event: Any = ...) -> cloud.ClusterPlan: ...

    def find_cluster(self, spec: cloud.CloudSpec) -> list[cloud.DropletInfo]: ...

    def provision_cluster(self, spec: cloud.CloudSpec, on_event: Any = ..., account: Any = None,
                          on_droplet: Any = None, host_key_for: Any = None) -> cloud.ClusterResult: ...

    def delete_surplus(self, spec: cloud.CloudSpec, surplus: Any, on_event: Any = ...) -> list[str]: ...

    def stack_inventory(self, spec: cloud.CloudSpec, known_addresses: Any = ..., on_event: Any = ...
                        ) -> cloud.StackInventory: ...

    def remove_stack(self, spec: cloud.CloudSpec, items: Any, on_event: Any = ...) -> list[cloud.Item]: ...


@dataclass(frozen=True)
class Edges:
    cloud: CloudPort | ModuleType
    connector: Callable[[connection.SshEndpoint], Callable[[bool], Executor]]
    run_checks: Callable[[checks.PublicSite, checks.ChecksConfig], checks.ChecksReport]
    # the public site's certificate alone (`inv status`), without the checks' requests
    certificate: Callable[[checks.PublicSite, float], CertificateInfo] = checks.served_certificate


REAL_EDGES = Edges(cloud=cloud, connector=connection.connector, run_checks=checks.run_checks)


class Inventory:
    """The targets of a run. One today; nothing below assumes one (artifact prefixes differ)."""

    def __init__(self, targets: Sequence[Host]) -> None:
        if not targets:
            raise ValueError("an inventory needs at least one target")
        self.targets = tuple(targets)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def close(self) -> None:
        for target in self.targets:
            target.close()


def public_key(settings: Settings) -> str:
    key = settings.ssh_key_path
    pub = Path(str(key) + ".pub")
    if not key.is_file():
        raise ConfigError("SSH_KEY_PATH", f"points to {key}, which does not exist",
                          f"create a key with: ssh-keygen -t ed25519 -f {key} -N '' (or set SSH_KEY_PATH to your key)")
    if not pub.is_file():
        raise ConfigError("SSH_KEY_PATH", f"has no public key beside it ({pub})",
                          f"write it with: ssh-keygen -y -f {key} > {pub}")
    return pub.read_text(encoding="utf-8").strip()


def cloud_spec(settings: Settings, need_key: bool = True) -> cloud.CloudSpec:
    s = settings
    return cloud.CloudSpec(
        token=s.token.reveal() if s.token else "",
        droplet_name=s.droplet_name,
        region=s.droplet_region,
        size=s.droplet_size,
        image=s.droplet_image,
        tags=s.droplet_tags,
        ssh_public_key=public_key(s) if need_key else "",
        ssh_key_name=f"{s.project}-{s.deploy_user}",
        deploy_user=s.deploy_user,
        base_dir=s.remote_base,
        domain=s.domain,
        subdomains=s.subdomains,
        firewall_enabled=not s.skip_allowlist,
        operator_ip_url=s.operator_ip_url,
        operator_ip_timeout=s.operator_ip_timeout,
        extra_ssh_cidrs=s.allowlist_extra_cidrs,
        request_timeout=s.do_request_timeout,
        active_timeout=s.do_active_timeout,
        ssh_wait_timeout=s.do_ssh_wait_timeout,
        max_retries=s.do_max_retries,
        endpoint=s.digitalocean_end_point,
        ssh_port=s.ssh_port,
        operator=operator_name(),
        allowlist_ttl=s.allowlist_ttl,
        nodes=s.nodes or 1,   # unset: the flow sets the count of the cluster it finds
    )


def ssh_target(settings: Settings, ip: str) -> connection.SshEndpoint:
    return connection.SshEndpoint(host=ip, user=settings.deploy_user, key_path=settings.ssh_key_path,
                                port=settings.ssh_port, known_hosts_path=settings.known_hosts_path,
                                connect_timeout=settings.ssh_connect_timeout, retries=settings.ssh_retries)


def layout(settings: Settings) -> ReleaseLayout:
    return ReleaseLayout(settings.remote_base)


def inventory(settings: Settings, nodes: Sequence[Node], edges: Edges = REAL_EDGES,
              timer: Callable[[str], Callable[[str, float], None]] | None = None) -> Inventory:
    """One Host per node; with several, each collects into remote/<name>/. ``timer`` (a Run's
    command_timer) gives each host the observer that profiles its commands."""
    several = len(nodes) > 1
    return Inventory([Host(name=h.name, host=h.ip, layout=layout(settings),
                             connector=edges.connector(ssh_target(settings, h.ip)),
                             artifact_prefix=f"remote/{h.name}/" if several else "remote/",
                             observer=timer(h.name) if timer else None)
                      for h in nodes])


def compose_files(settings: Settings) -> tuple[str, ...]:
    """Relative to the release folder; the non-production override only outside production."""
    files = ["compose.yml"]
    if settings.deploy_env != "production" and (settings.stack_dir / NONPROD_OVERRIDE).is_file():
        files.append(NONPROD_OVERRIDE)
    return tuple(files)


def compose_spec(settings: Settings) -> ComposeSpec:
    return ComposeSpec(project=settings.project, compose_files=compose_files(settings),
                       wait_timeout=int(settings.health_timeout))


def collect_spec(settings: Settings) -> CollectSpec:
    return CollectSpec(compose=compose_spec(settings), domain=settings.domain,
                       edge_network=f"{settings.project}_edge")


def check_target(settings: Settings, ip: str) -> checks.PublicSite:
    return checks.PublicSite(ip=ip, domain=settings.domain, deploy_env=settings.deploy_env)


def checks_config(settings: Settings) -> checks.ChecksConfig:
    rpm = str(settings.stack_env.get("RATE_LIMIT_API_RPM") or 60)
    if not rpm.isdigit():
        raise ConfigError("RATE_LIMIT_API_RPM", f"is {rpm!r}, not a whole number", "set RATE_LIMIT_API_RPM=60")
    return checks.ChecksConfig(samples=settings.check_samples, timeout=settings.check_timeout,
                               p95_budget_s=settings.check_p95_budget,
                               rate_limit_burst=settings.check_rate_limit,
                               rate_limit_requests=checks.rate_limit_burst_size(int(rpm)),
                               dns_resolvers=resolvers.parse(settings.dns_resolver),
                               test_ca_server=acme.test_ca_server(settings),
                               cert_wait_s=settings.check_cert_wait)


def local_release(settings: Settings) -> sync.LocalRelease:
    """The stack as shipped: its files plus what the settings render (a test CA's traefik.yml
    and root, a test S3 endpoint's CA); read once per run, so the release id covers them."""
    overlay = {**acme.release_overlay(settings, settings.stack_dir), **backup_config.release_overlay(settings)}
    return sync.LocalRelease.read(settings.stack_dir, overlay=overlay)
