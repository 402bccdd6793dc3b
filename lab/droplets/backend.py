"""ContainerBackend: the DropletBackend (lab/fake_do/backend.py) made of Docker containers.

One droplet = one container from the droplet image (sshd, inner dockerd, compose plugin,
iptables) on the lab network, plus a named volume for its /var/lib/docker. Everything
carries the lab label and the droplet id, so delete and `lab.down` find exactly it.
"""
from __future__ import annotations

import io
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable

from lab.config import LabConfig
from lab.docker import docker, inspect, list_labelled
from lab.droplets import firewall
from lab.droplets.network import ensure_network
from lab.errors import LabError
from lab.images import builder

Log = Callable[[str], None]
DROPLET_LABEL = "stackdeploy.lab.droplet"

# Docker-in-Docker without --privileged (which fails on this kind of host).
DIND_FLAGS = ("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
              "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
              "--device", "/dev/fuse", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw")


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """Non-loopback resolvers of the host: what the droplet's inner containers can use."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return []
    ns = [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1]
    return [n for n in ns if not n.startswith("127.") and n != "::1"]


def _keys_tar(keys: list[str], user_data: str | None) -> bytes:
    """authorized_keys for root and deploy (uid 1000), and user_data, as a tar for `docker cp -a`."""
    body = ("\n".join(k.strip() for k in keys if k.strip()) + "\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(path: str, data: bytes, uid: int, mode: int) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, uid, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        add("root/.ssh/authorized_keys", body, 0, 0o600)
        add("home/deploy/.ssh/authorized_keys", body, 1000, 0o600)
        if user_data:
            add("var/lib/cloud/instance/user-data.txt", user_data.encode(), 0, 0o600)
    return buf.getvalue()


class ContainerBackend:
    """Droplets as containers on the host's Docker engine."""

    def __init__(self, config: LabConfig | None = None, log: Log = print,
                 boot_timeout: float = 120.0):
        self.cfg = config or LabConfig()
        self.log = log
        self.boot_timeout = boot_timeout

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
               user_data: str | None, tags: list[str]) -> str:
        ensure_network(self.cfg)
        image = builder.ensure_droplet_image(self.log, self.cfg.debian_mirror)
        self.delete(droplet_id)           # a reused id starts from a clean machine
        cname, labels = self.container(droplet_id), self._labels(droplet_id)
        docker("volume", "create", *labels, self.volume(droplet_id))
        ns = " ".join(host_nameservers())
        docker("create", "--name", cname, "--hostname", _hostname(name), "--init",
               "--network", self.cfg.network, *labels, *DIND_FLAGS,
               "-v", f"{self.volume(droplet_id)}:/var/lib/docker",
               "-e", f"LAB_NAMESERVERS={ns}",
               "-e", f"LAB_DOCKERD_ARGS=--cgroup-parent=/{cname}", image)
        try:
            docker("cp", "-a", "-", f"{cname}:/", input=_keys_tar(ssh_public_keys, user_data))
            docker("start", cname)
            ip = self.ip(droplet_id)
            if not ip:
                raise LabError(f"droplet container {cname} got no address on {self.cfg.network}")
            self._wait_ready(cname, ip)
            self._preload(cname)
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

    def apply_firewall(self, droplet_id: int, inbound_rules: list[dict]) -> None:
        cname = self.container(droplet_id)
        if inspect("container", cname) is None:
            raise LabError(f"no droplet container {cname} to attach the firewall to")
        docker("exec", "-i", cname, "sh", input=firewall.script(inbound_rules, self._droplet_ips()).encode())

    # -- helpers -----------------------------------------------------------------------
    def _labels(self, droplet_id: int) -> list[str]:
        return ["--label", self.cfg.label, "--label", f"{DROPLET_LABEL}={droplet_id}",
                "--label", "stackdeploy.lab.kind=droplet"]

    def _droplet_ips(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for cid in list_labelled("container", self.cfg.label):
            info = inspect("container", cid) or {}
            did = (info.get("Config", {}).get("Labels") or {}).get(DROPLET_LABEL)
            net = info.get("NetworkSettings", {}).get("Networks", {}).get(self.cfg.network) or {}
            if did and net.get("IPAddress"):
                out[int(did)] = net["IPAddress"]
        return out

    def _wait_ready(self, cname: str, ip: str) -> None:
        """Ready = sshd answers with its banner on the lab network and dockerd answers."""
        deadline = time.monotonic() + self.boot_timeout
        ssh_ok = docker_ok = False
        while time.monotonic() < deadline:
            ssh_ok = ssh_ok or _ssh_banner(ip)
            docker_ok = docker_ok or subprocess.run(
                ["docker", "exec", cname, "docker", "info"], capture_output=True).returncode == 0
            if ssh_ok and docker_ok:
                return
            state = (inspect("container", cname) or {}).get("State", {})
            if not state.get("Running"):
                break
            time.sleep(0.5)
        logs = docker("exec", cname, "sh", "-c", "tail -n 20 /var/log/dockerd.log /var/log/sshd.log",
                      check=False)
        raise LabError(f"droplet {cname} did not become ready in {self.boot_timeout:.0f}s "
                       f"(sshd {'up' if ssh_ok else 'down'}, dockerd {'up' if docker_ok else 'down'}):\n"
                       f"{logs[-2000:]}")

    def _preload(self, cname: str) -> None:
        """Load the stand-ins into the droplet's engine: it cannot pull from Docker Hub either."""
        tags = [t for t in self.cfg.preload if inspect("image", t) is not None]
        missing = sorted(set(self.cfg.preload) - set(tags))
        if missing:
            self.log(f"not preloading {', '.join(missing)} into {cname}: not built on the host "
                     f"(run `inv lab.up`)")
        if not tags:
            return
        save = subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "exec", "-i", cname, "docker", "load", "-q"],
                              stdin=save.stdout, capture_output=True)
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise LabError(f"loading {', '.join(tags)} into {cname} failed: "
                           f"{load.stderr.decode(errors='replace')[-800:]}")


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
