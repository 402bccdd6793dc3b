"""What the lab tasks do, as functions of a LabConfig (tasks.py only parses flags)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from lab import state, stackenv
from lab.config import LabConfig
from lab.docker import docker, engine_problem, inspect, list_labelled
from lab.droplets.backend import DROPLET_LABEL
from lab.droplets.network import ensure_network
from lab.errors import LabError
from lab.images import builder, recipes
from lab.ports import port_free
from lab.services import containers
from lab.services import dns as labdns
from lab.services import pebble
from lab.services import registry as labregistry
from lab.services import s3 as labs3

Log = Callable[[str], None]
FACTORY = "lab.droplets.factory:from_env"
DNS_FACTORY = "lab.services.dns:publisher_from_env"


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v2/"


def _api_alive(st: dict[str, Any]) -> bool:
    try:
        r = requests.get(f"http://127.0.0.1:{st['port']}/lab/my-ip", timeout=2)
        return r.status_code == 200
    except (requests.RequestException, KeyError):
        return False


def _pid_is_api(pid: int) -> bool:
    """Only ever signal our own API process, never a recycled pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"lab.fake_do" in cmdline


def build_images(cfg: LabConfig, log: Log = print) -> list[str]:
    """The droplet image (always built here) and the stack's images (stand-ins or pulled)."""
    builder.ensure_droplet_image(log, cfg.debian_mirror)
    for recipe in recipes.INFRA.values():   # DNS, the test CA, the registry, S3
        builder.ensure_image(recipe, log, cfg.debian_mirror)
    if cfg.images == "pull":
        return builder.pull_images(recipes.STANDINS, log)
    return builder.ensure_standins(None, log, cfg.debian_mirror)


def _port_free(port: int) -> bool:
    return port_free(port)


def _api_state_file(cfg: LabConfig) -> Path:
    return (cfg.state_dir / "api-state.json").resolve()


def api_processes(cfg: LabConfig) -> list[int]:
    """Every lab API process serving this lab's state folder, whatever state.json says (or
    whether it is still there): found by the --state-file its command line names."""
    want = str(_api_state_file(cfg)).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"lab.fake_do" in args and b"--state-file" in args:
            i = args.index(b"--state-file")
            if args[i + 1:i + 2] == [want]:
                found.append(int(entry.name))
    return sorted(found)


def unknown_droplets(cfg: LabConfig) -> list[dict[str, Any]]:
    """Droplet containers of this lab that its API's state file does not list (the state folder
    was removed under them): a new API would not know them, and would clash with their names."""
    try:
        known = set(json.loads(_api_state_file(cfg).read_text()).get("droplets") or {})
    except (OSError, ValueError, AttributeError):
        known = set()
    return [d for d in droplets(cfg) if str(d["id"]) not in known]


def up(cfg: LabConfig, log: Log = print) -> dict[str, Any]:
    """Images, network, keypair, the fake API in the background, the lab domain. Idempotent.

    Heals what it can: lab service containers that crashed, stopped, or were started for a
    state folder since removed are replaced (ensure_container), and an API left running
    without its state is stopped. Droplet containers hold what was deployed on them: ones the
    API no longer knows are never removed here; the error names them and `inv lab.down`."""
    problem = engine_problem()
    if problem:
        raise LabError(problem)
    lost = unknown_droplets(cfg)
    if lost:
        names = ", ".join(d["container"] for d in lost)
        raise LabError(f"droplet containers of lab {cfg.name} remain that its state folder "
                       f"({cfg.state_dir}) no longer lists, so a new lab API would not know them: "
                       f"{names}. They hold what was deployed on them; when you no longer need "
                       f"that, run `inv lab.down` (removes them and the rest of lab {cfg.name}), "
                       "then `inv lab.up`")
    build_images(cfg, log)
    gateway = ensure_network(cfg)
    state.ensure_dir(cfg.state_dir)
    st = state.read(cfg.state_dir) or {}
    token = st.get("token") or secrets.token_hex(32)   # the container registry takes it too
    # Before the API: it publishes the zones it holds as soon as it starts. Started side by
    # side (Pebble asks the DNS server only when it validates), which halves their wait.
    with ThreadPoolExecutor(max_workers=4) as pool:
        dns_started = pool.submit(labdns.ensure, cfg, log)
        registry_started = pool.submit(labregistry.ensure, cfg, token, log)
        s3_started = pool.submit(labs3.ensure, cfg, log)
        acme_directory = pool.submit(pebble.ensure, cfg, log).result()
        dns_started.result()
        registry_server = registry_started.result()
        s3_endpoint = s3_started.result()
    if st and _api_alive(st):
        log(f"lab API already running at {st['api_url']} (pid {st['pid']})")
        return st
    stopped = stop_api(cfg)     # one that no longer answers, or serves a removed state folder
    if stopped:
        log(f"lab API: stopped pid {', '.join(map(str, stopped))}, which ran without a working state")
    if not _port_free(cfg.api_port):
        raise LabError(f"lab setting `api_port` (LAB_API_PORT) = {cfg.api_port}: 127.0.0.1:"
                       f"{cfg.api_port} is already in use; choose another port")
    key = state.ensure_keypair(cfg.state_dir)
    log_path = cfg.state_dir / "api.log"
    # The token travels in the environment: a command line is readable by every local user.
    cmd = [sys.executable, "-m", "lab.fake_do", "--port", str(cfg.api_port),
           "--backend-factory", FACTORY, "--dns-factory", DNS_FACTORY, "--operator-ip", gateway,
           "--state-file", str((cfg.state_dir / "api-state.json").resolve()),
           "--registry-server", registry_server]
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **cfg.to_env(), "LAB_STATE_DIR": str(cfg.state_dir.resolve()),
                                     "FAKE_DO_TOKEN": token}, start_new_session=True,
                                cwd=Path(__file__).resolve().parent.parent)
    st = {"name": cfg.name, "pid": proc.pid, "port": cfg.api_port, "api_url": api_url(cfg.api_port),
          "token": token, "ssh_key": str(key), "operator_ip": gateway, "domain": cfg.domain,
          "subnet": cfg.subnet, "network": cfg.network, "started_at": time.time(),
          "dns_server": cfg.dns_ip, "acme_directory": acme_directory, "acme_ca": str(pebble.ca_path(cfg)),
          "registry": registry_server, "registry_ca": str(labregistry.ca_path(cfg)), "s3": s3_endpoint}
    state.write(cfg.state_dir, st)
    deadline = time.monotonic() + 30
    while not _api_alive(st):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
            raise LabError("the lab API did not start; its log " f"({log_path}):\n" + "\n".join(tail))
        time.sleep(0.2)
    _register_domain(st)
    log(f"lab is up: API {st['api_url']} (pid {proc.pid}), network {cfg.network} {cfg.subnet}, "
        f"domain {cfg.domain}, DNS {cfg.dns_ip}, ACME {acme_directory}, registry {registry_server}, "
        f"S3 https://{s3_endpoint}/{labs3.BUCKET}; next: `inv lab.env > .env.lab` then `inv deploy --env-file .env.lab`")
    return st


def _register_domain(st: dict[str, Any]) -> None:
    """Make the lab domain "managed" so deploy's DNS step finds it, like a real DO account."""
    r = requests.post(st["api_url"] + "domains", json={"name": st["domain"]},
                      headers={"Authorization": f"Bearer {st['token']}"}, timeout=10)
    if r.status_code not in (201, 422):
        raise LabError(f"registering the lab domain {st['domain']} failed: HTTP {r.status_code}")


def droplets(cfg: LabConfig) -> list[dict[str, Any]]:
    out = []
    for cid in list_labelled("container", cfg.label):
        info = inspect("container", cid) or {}
        labels = info.get("Config", {}).get("Labels") or {}
        if DROPLET_LABEL not in labels:
            continue
        net = info.get("NetworkSettings", {}).get("Networks", {}).get(cfg.network) or {}
        out.append({"id": int(labels[DROPLET_LABEL]), "container": info.get("Name", "").lstrip("/"),
                    "hostname": info.get("Config", {}).get("Hostname"), "ip": net.get("IPAddress"),
                    **containers.describe(info)})
    return sorted(out, key=lambda d: d["id"])


SERVICES = {labdns.ROLE: "DNS server", pebble.ROLE: "ACME CA (Pebble)",
            labregistry.ROLE: "container registry", labs3.ROLE: "S3 endpoint"}


def api_state(cfg: LabConfig, st: dict[str, Any] | None) -> dict[str, Any]:
    """running (answers), not answering (its process is there), exited (state.json names a
    process that is gone), stray (running for a state folder that is gone), or missing."""
    pids = api_processes(cfg)
    if st and _api_alive(st):
        now = "running"
    elif st and st.get("pid") in pids:
        now = "not answering"
    elif pids:
        now = "stray"
    elif st:
        now = "exited"
    else:
        now = "missing"
    return {"state": now, "pid": (st or {}).get("pid") if now != "stray" else pids[0],
            "url": (st or {}).get("api_url"), "log": str(cfg.state_dir / "api.log")}


def status(cfg: LabConfig) -> dict[str, Any]:
    st = state.read(cfg.state_dir)
    images = {t: (inspect("image", t) is not None)
              for t in [recipes.DROPLET_TAG, *recipes.INFRA, *recipes.STANDINS]}
    api = api_state(cfg, st)
    services = {role: {"what": what, **containers.service(cfg, role)} for role, what in SERVICES.items()}
    if services[labs3.ROLE]["state"] == "running" and labs3.state_of(cfg) == "unreachable":
        services[labs3.ROLE]["state"] = "unreachable"
    return {"api_running": api["state"] == "running", "api_url": (st or {}).get("api_url"),
            "pid": (st or {}).get("pid"), "api": api, "services": services, "network": cfg.network,
            "network_exists": inspect("network", cfg.network) is not None,
            "droplets": droplets(cfg), "unknown_droplets": [d["id"] for d in unknown_droplets(cfg)],
            "images": images,
            "s3": {"endpoint": labs3.address(cfg), "bucket": labs3.BUCKET,
                   "state": services[labs3.ROLE]["state"]}}


def stop_api(cfg: LabConfig, timeout: float = 10.0) -> list[int]:
    """Stop the lab API state.json names and any other serving this state folder; their pids."""
    pid = (state.read(cfg.state_dir) or {}).get("pid")
    pids = sorted({*([pid] if pid and _pid_is_api(pid) else []), *api_processes(cfg)})
    for pid in pids:
        _stop(pid, timeout)
    return pids


def _stop(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _pid_is_api(pid) and time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _pid_is_api(pid):
        os.kill(pid, signal.SIGKILL)


def down(cfg: LabConfig, purge_images: bool = False, log: Log = print) -> dict[str, list[str]]:
    """Remove what this lab made, found by its label (and its state files); nothing else."""
    removed: dict[str, list[str]] = {"api": [], "containers": [], "volumes": [], "networks": [],
                                     "images": [], "files": []}
    removed["api"] = [str(pid) for pid in stop_api(cfg)]
    for kind, key in (("container", "containers"), ("volume", "volumes"), ("network", "networks")):
        for obj in list_labelled(kind, cfg.label):
            if kind == "container":
                docker("rm", "-f", "-v", obj)
            else:
                docker(kind, "rm", obj)
            removed[key].append(obj[:12])
    if purge_images:
        removed["images"] = builder.remove_standins(log)
    for name in ("state.json", "api-state.json", "api.log", "id_ed25519", "id_ed25519.pub",
                 "stack.env", "known_hosts", "dashboard-password", state.INSTANCE_FILE):
        p = cfg.state_dir / name
        if p.exists():
            p.unlink()
            removed["files"].append(str(p))
    # zone files, listener certificates and keys, htpasswd, the S3 access key
    for name in ("dns", "pebble", "registry", "s3"):
        p = cfg.state_dir / name
        if p.is_dir():
            shutil.rmtree(p)
            removed["files"].append(str(p))
    if cfg.state_dir.is_dir() and not any(cfg.state_dir.iterdir()):
        cfg.state_dir.rmdir()
    log("lab is down: " + ", ".join(f"{len(v)} {k}" for k, v in removed.items()))
    return removed


def env_values(cfg: LabConfig, stack_example: Path = Path(__file__).resolve().parent.parent / "stack" / ".env.example") -> dict[str, str]:
    """The variables `inv deploy --env-file` needs to deploy into this lab."""
    st = state.read(cfg.state_dir)
    if not st:
        raise LabError("the lab is not up (no state in "
                       f"{cfg.state_dir}/): run `inv lab.up` first")
    values = {"DIGITALOCEAN_TOKEN": st["token"], "DIGITALOCEAN_END_POINT": st["api_url"],
              "DOMAIN": st["domain"], "SSH_KEY_PATH": st["ssh_key"],
              "SSH_KNOWN_HOSTS": str((cfg.state_dir / "known_hosts").resolve()),
              "OPERATOR_IP_URL": f"http://127.0.0.1:{st['port']}/lab/my-ip",
              # The lab's own DNS server answers for the domain; Pebble is the ACME CA.
              "DNS_RESOLVER": st.get("dns_server") or cfg.dns_ip,
              "ACME_CA_SERVER": st.get("acme_directory") or pebble.directory_url(cfg),
              "ACME_TEST_CA": "true",
              "ACME_TEST_CA_ROOT": st.get("acme_ca") or str(pebble.ca_path(cfg))}
    spaces = labs3.env_values(cfg)   # Spaces' stand-in: its key, never a generated value
    if stack_example.exists():
        kept_path = cfg.state_dir / "stack.env"
        kept = stackenv.parse_example(kept_path.read_text()) if kept_path.exists() else {}
        pw_path = cfg.state_dir / "dashboard-password"
        if not pw_path.exists():
            state.write_private(pw_path, secrets.token_urlsafe(18) + "\n")
        example = {k: v for k, v in stackenv.parse_example(stack_example.read_text()).items() if k not in spaces}
        stack = stackenv.lab_values(example, st["domain"], st["operator_ip"], kept,
                                    pw_path.read_text().strip())
        state.write_private(kept_path, stackenv.format_env(stack))
        values.update({k: v for k, v in stack.items() if k != "DOMAIN"})
    return {**values, **spaces}


__all__ = ["up", "down", "status", "env_values", "build_images", "droplets", "stop_api",
           "api_processes", "unknown_droplets"]
