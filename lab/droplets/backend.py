"""ContainerBackend: the DropletBackend (lab/fake_do/backend.py) made of Docker containers.

One droplet = one container from the droplet image (systemd, cloud-init, sshd: a clean cloud
image) on the lab network, plus a named volume for its /var/lib/docker. It boots through
systemd and its own cloud-init, which applies the user data of the create request (NoCloud
seed, lab/droplets/seed.py): users, SSH, packages (Docker) and runcmd take the time they take,
after the droplet already answers SSH, as on DigitalOcean. Everything carries the lab label
and the droplet id, so delete and `lab.down` find exactly it.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from collections.abc import Callable

from lab.config import LabConfig
from lab.docker import docker, inspect, list_labelled
from lab.droplets import firewall, seed
from lab.droplets.network import ensure_network, ensure_vpc
from lab.errors import LabError
from lab.images import builder
from lab.services import registry as labregistry

Log = Callable[[str], None]
DROPLET_LABEL = "stackdeploy.lab.droplet"
SERVICE_ADDRESSES = 16          # the top of the lab network, kept for service containers
_ADDRESSES = threading.Lock()   # the fake API creates droplets from several threads at once

# Docker-in-Docker without --privileged (which fails on this kind of host).
DIND_FLAGS = ("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
              "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
              "--device", "/dev/fuse", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw")
# systemd as PID 1 wants its runtime folders on tmpfs, as on a VM.
SYSTEMD_FLAGS = ("--tmpfs", "/run", "--tmpfs", "/run/lock")


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """Non-loopback resolvers of the host: what the droplet's inner containers can use."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return []
    ns = [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1]
    return [n for n in ns if not n.startswith("127.") and n != "::1"]


class ContainerBackend:
    """Droplets as containers on the host's Docker engine."""

    def __init__(self, config: LabConfig | None = None, log: Log = print,
                 boot_timeout: float = 120.0):
        self.cfg = config or LabConfig()
        self.log = log
        self.boot_timeout = boot_timeout

    @property
    def vpc_range(self) -> str:
        return self.cfg.vpc

    def container(self, droplet_id: int) -> str:
        return f"{self.cfg.name}-droplet-{droplet_id}"

    def volume(self, droplet_id: int) -> str:
        return f"{self.cfg.name}-droplet-{droplet_id}-docker"

    def ip(self, droplet_id: int) -> str | None:
        info = inspect("container", self.container(droplet_id))
        if not info:
            return None
        net = info["NetworkSettings"]["Networks"].get(self.cfg.network) or {}
        return net.get("IPAddress") or None

    # -- DropletBackend --------------------------------------------------------------
    def create(self, droplet_id: int, name: str, ssh_public_keys: list[str],
               user_data: str | None, tags: list[str], private_ip: str | None = None) -> str:
        ensure_network(self.cfg)
        if private_ip:
            ensure_vpc(self.cfg)
        image = builder.ensure_droplet_image(self.log, self.cfg.debian_mirror)
        preload = self._preload_archive()
        self.delete(droplet_id)           # a reused id starts from a clean machine
        cname, labels = self.container(droplet_id), self._labels(droplet_id)
        docker("volume", "create", *labels, self.volume(droplet_id))
        mounts = ["-v", f"{preload}:{seed.PRELOAD_PATH}:ro"] if preload else []
        with _ADDRESSES:   # a fixed address, kept through stop and start (as a droplet's)
            docker("create", "--name", cname, "--hostname", _hostname(name),
                   "--network", self.cfg.network, "--ip", self._free_public_ip(), *labels, *DIND_FLAGS,
                   *SYSTEMD_FLAGS, "-v", f"{self.volume(droplet_id)}:/var/lib/docker", *mounts, image)
        try:
            docker("cp", "-a", "-", f"{cname}:/", input=seed.as_tar(seed.files(
                droplet_id, _hostname(name), ssh_public_keys, user_data, host_nameservers(),
                cgroup_parent=f"/{cname}", registry_cas=self._registry_cas())))
            started = time.monotonic()
            docker("start", cname)
            ip = self.ip(droplet_id)
            if not ip:
                raise LabError(f"droplet container {cname} got no address on {self.cfg.network}")
            if private_ip:   # after start, so the VPC is eth1 as on a droplet (eth0 stays public)
                docker("network", "connect", "--ip", private_ip, self.cfg.vpc_network, cname)
            self._wait_ssh(cname, ip)
            self.log(f"droplet {cname}: SSH answers {time.monotonic() - started:.1f}s after boot "
                     "(cloud-init goes on applying the user data)")
        except BaseException:
            self.delete(droplet_id)
            raise
        return ip

    def delete(self, droplet_id: int, attempts: int = 5) -> None:
        # A loaded engine sometimes refuses `rm -f` once ("could not kill container"); retry
        # until the container is gone, and say so with docker's words when it never goes.
        cname = self.container(droplet_id)
        for attempt in range(attempts):
            try:
                docker("rm", "-f", "-v", cname)
            except LabError as exc:
                if inspect("container", cname) is None:
                    break                              # "No such container": nothing to delete
                if attempt == attempts - 1:
                    raise LabError(f"could not delete droplet {droplet_id}: {exc}") from exc
                time.sleep(1 + attempt)
            else:
                break
        if inspect("volume", self.volume(droplet_id)) is not None:
            docker("volume", "rm", "-f", self.volume(droplet_id))

    def apply_firewall(self, droplet_id: int, inbound_rules: list[dict],
                       tagged: dict[str, list[int]] | None = None) -> None:
        cname = self.container(droplet_id)
        if inspect("container", cname) is None:
            raise LabError(f"no droplet container {cname} to attach the firewall to")
        docker("exec", "-i", cname, "sh",
               input=firewall.script(inbound_rules, self._droplet_ips(), tagged).encode())

    # -- helpers -----------------------------------------------------------------------
    def _free_public_ip(self) -> str:
        """The lowest address of the lab network that no container holds or will take back on
        start (a stopped droplet keeps its own), below the lab services' fixed ones."""
        network = inspect("network", self.cfg.network) or {}
        gateway = next((c.get("Gateway") for c in (network.get("IPAM") or {}).get("Config") or []), None)
        taken = {gateway} | {c["IPv4Address"].split("/")[0] for c in (network.get("Containers") or {}).values()}
        for cid in list_labelled("container", self.cfg.label):
            net = (((inspect("container", cid) or {}).get("NetworkSettings") or {}).get("Networks") or {}
                   ).get(self.cfg.network) or {}
            taken |= {net.get("IPAddress"), (net.get("IPAMConfig") or {}).get("IPv4Address")}
        # The highest addresses are the lab services' fixed ones (DNS, Pebble, registry: config.py).
        for address in list(ipaddress.ip_network(self.cfg.subnet).hosts())[:-SERVICE_ADDRESSES]:
            if str(address) not in taken:
                return str(address)
        raise LabError(f"no free address left for a droplet on {self.cfg.subnet} (LAB_SUBNET)")

    def _labels(self, droplet_id: int) -> list[str]:
        return ["--label", self.cfg.label, "--label", f"{DROPLET_LABEL}={droplet_id}",
                "--label", "stackdeploy.lab.kind=droplet"]

    def _registry_cas(self) -> dict[str, bytes]:
        """The lab registry's CA, once `lab.up` has made it."""
        ca = labregistry.ca_path(self.cfg)
        return {labregistry.server(self.cfg): ca.read_bytes()} if ca.is_file() else {}

    def _droplet_ips(self) -> dict[int, list[str]]:
        """Each droplet's addresses on every lab network it is on: a rule naming a droplet (by
        id or tag) admits it from any of them, as DigitalOcean admits its public and VPC ones."""
        out: dict[int, list[str]] = {}
        for cid in list_labelled("container", self.cfg.label):
            info = inspect("container", cid) or {}
            did = (info.get("Config", {}).get("Labels") or {}).get(DROPLET_LABEL)
            nets = (info.get("NetworkSettings", {}).get("Networks") or {}).values()
            ips = [net["IPAddress"] for net in nets if net.get("IPAddress")]
            if did and ips:
                out[int(did)] = ips
        return out

    def _wait_ssh(self, cname: str, ip: str) -> None:
        """Booted = sshd answers with its banner (after cloud-init wrote the host key). Docker
        is not waited for: cloud-init installs it later, and the deployer waits for that."""
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:
            if _ssh_banner(ip):
                return
            if not (inspect("container", cname) or {}).get("State", {}).get("Running"):
                break
            time.sleep(0.5)
        logs = docker("exec", cname, "sh", "-c", "systemctl --failed --no-pager; "
                      "tail -n 20 /var/log/cloud-init.log", check=False)
        raise LabError(f"droplet {cname} did not answer SSH in {self.boot_timeout:.0f}s:\n{logs[-2000:]}")

    def _preload_archive(self) -> Path | None:
        """`docker save` of the stand-ins, made once per set of image ids; the droplet's vendor
        data loads it once cloud-init has installed Docker (it cannot pull from Docker Hub)."""
        tags = [t for t in self.cfg.preload if inspect("image", t) is not None]
        missing = sorted(set(self.cfg.preload) - set(tags))
        if missing:
            self.log(f"not preloading {', '.join(missing)}: not built on the host (run `inv lab.up`)")
        if not tags:
            return None
        ids = [(inspect("image", t) or {}).get("Id", "") for t in tags]
        key = hashlib.sha256(json.dumps(sorted(zip(tags, ids))).encode()).hexdigest()[:16]
        path = builder.cache_dir() / "preload" / f"{key}.tar"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{key}.{os.getpid()}.tmp")
            proc = subprocess.run(["docker", "save", "-o", str(tmp), *tags], capture_output=True, text=True)
            if proc.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise LabError(f"saving {', '.join(tags)} for the droplets failed: {proc.stderr[-800:]}")
            os.replace(tmp, path)
        return path


def _hostname(name: str) -> str:
    clean = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")
    return clean[:63] or "droplet"


def _ssh_banner(ip: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=2) as s:
            s.settimeout(2)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False
