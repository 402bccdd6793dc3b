"""One droplet, the whole step: provision() finds or creates it, locks SSH to the operators and
points DNS at it; plan_provision() says what provision() would do, from GET requests only."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from deploy import hostkey
from deploy.cloud.allowlist import _ensure_allowlist
from deploy.cloud.api import AccountInfo, CloudError, CloudSpec, OnEvent, _library_env, _log_event, check_token
from deploy.cloud.dns import DnsResult, _ensure_dns, _plan_dns, dns_hosts
from deploy.cloud.droplets import (DropletInfo, _create_droplet, _find, _info, _refuse_swarm_leader,
                                   _settle_creation, _wait_active, wait_for_ssh)
from deploy.cloud.firewall import FirewallResult, _firewall_state, _ssh_sources, discover_operator_ip
from deploy.cloud.keys import _ensure_ssh_key, _find_ssh_key
from deploy.cloud.tags import now_s, presence_tag
from deploy.cloud.user_data import CloudInitError, build_user_data
from deploy.redact import SecretRegistry


@dataclass(frozen=True)
class ProvisionResult:
    droplet: DropletInfo
    firewall: FirewallResult
    dns: DnsResult
    warnings: list[str]
    changed: bool
    ssh_ready: bool = False
    ssh_key_registered: bool = False


# --- the whole step ---------------------------------------------------------------------
def _checked_input(spec: CloudSpec, planning: bool = False) -> str:
    """The droplet's user data; bad input (key, user, subdomains) fails before any API call.
    A plan (no host key: nothing is created) checks the same inputs with a throwaway key."""
    if spec.host_key is None and not planning:
        raise CloudError("no SSH host key was generated for the new droplet",
                         "provision through deploy.flows.reach.provision, which generates and pins one")
    try:
        # A plan creates nothing: a throwaway key (never kept, never sent) checks the rest.
        key = spec.host_key or hostkey.generate(SecretRegistry())
        user_data = build_user_data(spec.deploy_user, spec.ssh_public_key, key, spec.base_dir)
    except CloudInitError as exc:
        raise CloudError(str(exc), "fix DEPLOY_USER / SSH_KEY_PATH (its .pub file) / REMOTE_BASE_DIR") from None
    if spec.domain:
        dns_hosts(spec.domain, spec.subdomains)
    return user_data


def _begin(spec: CloudSpec, on_event: OnEvent, account: AccountInfo | None) -> tuple[str, str | None]:
    """(user data, operator IP or None without a firewall): the input checked before any API
    call, then the token (unless ``account`` says it was checked this run), then the operator's
    address, known before anything is created: a new droplet carries its creator's announcement."""
    user_data = _checked_input(spec)
    if account is None:
        account = check_token(spec, on_event)
        on_event("info", f"DigitalOcean token accepted ({account.email})")
    operator_ip = (discover_operator_ip(spec.operator_ip_url, spec.operator_ip_timeout)
                   if spec.firewall_enabled else None)
    return user_data, operator_ip


def provision(spec: CloudSpec, on_event: OnEvent = _log_event,
              account: AccountInfo | None = None,
              on_droplet: Callable[[DropletInfo], None] | None = None) -> ProvisionResult:
    """Find or create the droplet, lock SSH to the operator, point DNS at it. ``account``: the
    token was already checked this run (the check is not repeated). ``on_droplet`` hears of the
    droplet as soon as it is found or created, and again once it is active (with its address),
    so a provision that fails or is interrupted later still names it."""
    def report(info: DropletInfo) -> DropletInfo:
        if on_droplet is not None:
            on_droplet(info)
        return info

    user_data, operator_ip = _begin(spec, on_event, account)
    warnings: list[str] = []
    with _library_env(spec):
        droplet = _find(spec, on_event)
        _refuse_swarm_leader(spec, droplet)
        created = key_registered = False
        if droplet is None:
            key_id, key_registered = _ensure_ssh_key(spec, on_event)
            announce = (presence_tag(operator_ip, now_s(), spec.operator),) if operator_ip else ()
            droplet = _create_droplet(spec, key_id, user_data, on_event, announce)
            created = True
            _settle_creation(spec, droplet, on_event)  # a concurrent deploy's older droplet wins
        else:
            on_event("info", f"found droplet {droplet.name} (id {droplet.id}, {droplet.status})")
        report(_info(droplet, created))
        if operator_ip:  # before the droplet is reachable, so SSH is never open to all
            firewall = _ensure_allowlist(spec, droplet, operator_ip, on_event)
        else:
            firewall = FirewallResult("skipped", None, [])
            on_event("info", "allowlist skipped: the Cloud Firewall was not touched")
        droplet = _wait_active(spec, droplet, on_event)
        info = report(_info(droplet, created))
        if info.public_ipv4 is None:
            warnings.append(f"droplet {info.name} has no public IPv4 address yet; remote steps "
                            "need one (check the droplet's networking in the control panel)")
            on_event("warning", warnings[-1])
        ssh_ready = False
        if info.public_ipv4 and spec.ssh_wait_timeout > 0:
            ssh_ready = wait_for_ssh(info.public_ipv4, spec.ssh_port, spec.ssh_wait_timeout)
            if not ssh_ready:
                warnings.append(f"SSH on {info.public_ipv4}:{spec.ssh_port} did not answer within "
                                f"{spec.ssh_wait_timeout:g} s; check the firewall allowlist "
                                "(your IP) or raise DO_SSH_WAIT_TIMEOUT")
                on_event("warning", warnings[-1])
        if not spec.domain:
            dns = DnsResult("skipped", [], "no DOMAIN configured: DNS records were not managed")
        elif info.public_ipv4 is None:
            dns = DnsResult("skipped", [], "DNS not updated: the droplet has no public IPv4")
        else:
            dns = _ensure_dns(spec, info.public_ipv4, on_event)
    if dns.warning and dns.warning not in warnings:
        warnings.append(dns.warning)
    changed = (created or key_registered or firewall.status in ("created", "updated")
               or bool(dns.records_changed))
    return ProvisionResult(droplet=info, firewall=firewall, dns=dns, warnings=warnings,
                           changed=changed, ssh_ready=ssh_ready, ssh_key_registered=key_registered)


# --- the plan: what provision() would do, from GET requests only -----------------------
@dataclass(frozen=True)
class FirewallPlan:
    action: str                 # create | update | attach | unchanged | skipped
    operator_ip: str | None
    ssh_from: list[str]         # the SSH sources the rules would allow
    ssh_from_now: list[str]     # the SSH sources the existing firewall allows ([] without one)


@dataclass(frozen=True)
class ProvisionPlan:
    """What provision() would do. ``droplet`` is the droplet found, None when one would be created
    (name/region/size/image are then the settings'); DNS changes use the DnsResult shape with
    actions create|update, and "to" None for the IP a new droplet has yet to get."""

    droplet_action: str         # create | found
    name: str
    region: str
    size: str
    image: str                  # the image a new droplet would get ("" for a found one)
    droplet: DropletInfo | None
    ssh_identity: str           # our public key in the account: register | present | unused (found droplet)
    firewall: FirewallPlan
    dns: DnsResult
    warnings: list[str]

    @property
    def changes(self) -> bool:
        return (self.droplet_action == "create" or self.ssh_identity == "register"
                or self.firewall.action not in ("unchanged", "skipped") or bool(self.dns.records_changed))


def plan_provision(spec: CloudSpec, on_event: OnEvent = _log_event,
                   account: AccountInfo | None = None) -> ProvisionPlan:
    """What provision() would do, found out with GET requests only (pyinfra's --dry, Ansible's
    check mode): nothing is created, changed or attached, and nothing waits for the droplet."""
    _checked_input(spec, planning=True)
    if account is None:
        account = check_token(spec, on_event)
    warnings: list[str] = []
    with _library_env(spec):
        found = _find(spec, on_event)
        _refuse_swarm_leader(spec, found)
        info = _info(found, created=False) if found is not None else None
        if info is None:
            key = "present" if _find_ssh_key(spec, on_event) is not None else "register"
        else:
            key = "unused"
            if info.status in ("off", "archive"):
                warnings.append(f"droplet {info.name} (id {info.id}) is {info.status!r}: a deploy would stop "
                                "there; power it on in the control panel, or delete it so a new one is created")
            elif info.public_ipv4 is None:
                warnings.append(f"droplet {info.name} has no public IPv4 address: a deploy could not reach it")
            if (info.size, info.region) != (spec.size, spec.region):
                warnings.append(f"droplet {info.name} is {info.size or '?'} in {info.region}, the settings say "
                                f"{spec.size} in {spec.region}: a deploy keeps the droplet as it is (resize it "
                                "in the control panel, or set DROPLET_SIZE / DROPLET_REGION to match)")
        if spec.firewall_enabled:
            state = _firewall_state(spec, info.id if info else None, on_event)
            firewall = FirewallPlan(state.action, state.operator_ip, _ssh_sources(state.inbound),
                                    _ssh_sources((state.current or {}).get("inbound_rules") or []))
        else:
            firewall = FirewallPlan("skipped", None, [], [])
        if not spec.domain:
            dns = DnsResult("skipped", [], "no DOMAIN configured: DNS records would not be managed")
        elif info is not None and info.public_ipv4 is None:
            dns = DnsResult("skipped", [], "DNS would not be updated: the droplet has no public IPv4")
        else:
            dns = _plan_dns(spec, info.public_ipv4 if info else None, on_event)
    if dns.warning and dns.status == "unmanaged":
        warnings.append(dns.warning)
    return ProvisionPlan(droplet_action="found" if info else "create", name=spec.droplet_name,
                         region=info.region if info else spec.region, size=info.size if info else spec.size,
                         image=spec.image if info is None else "", droplet=info, ssh_identity=key,
                         firewall=firewall, dns=dns, warnings=warnings)
