"""stackdeploy's update-only against pyinfra 3 and Ansible doing the same work on the same lab droplet.

    .venv/bin/python benchmarks/peers.py [--keep] [--json PATH]

Starts its own lab (name sdpeers, port 8799, subnet 10.69.0.0/24) and deploys a copy of stack/ in
full (`inv deploy`), which gives the droplet, its SSH key and pinned host key, and the stack's .env
in the live release (<base>/current/.env, remote/layout.py). Then, for each tool in the order
pyinfra, Ansible, stackdeploy (ours last, so its warm-up puts its own release back in place of the
peers' containers and the lab ends as `inv deploy` leaves it): a warm-up run (not measured), a
redeploy with no change, and a redeploy after a comment line (a different one per tool) was
appended to stack/api/app/main.py. Prints wall time and the bytes the droplet received for both
measured runs, with the ratios ours/pyinfra and ours/ansible. Asserts nothing.

The work each tool does:
  stackdeploy  `inv deploy --update-only` (delta push as a new release, build, start-first
               cutover, wait healthy, then its own checks and collection, which a peer skips)
  pyinfra      files.sync of the stack (delete=True, the peer's .env kept) into ~/peers/pyinfra,
               then server.shell: `docker compose up -d --build --wait` and `docker compose ps
               --format json`
  ansible      ansible.builtin.copy of the stack into ~/peers/ansible (mode: preserve, or the
               entrypoints lose their execute bit; copy has no delete, and synchronize needs
               rsync, which neither this machine nor the droplet has), then
               community.docker.docker_compose_v2 (build: always, wait: true) and a command task
               `docker compose ps --format json`; facts not gathered, the droplet's python3 named
               (no interpreter discovery), everything else Ansible's defaults (no pipelining)
Both peers run compose with the deployer's project name (PROJECT_NAME, default stackdeploy), so
their containers replace ours and only one stack holds ports 80/443; each has its own copy of
the live release's .env (0600), made at warm-up on the droplet itself, never read here. The files
the deployer renders into a release beside the stack's (the test CA's traefik.yml and the CA
roots: the release's files that differ from the stack copy, .env and the release metadata aside)
are fetched once from the live release and written into the stack copy, so the peers ship the
same bytes; the deployer's own rendering of them gives the same content, so its release is
unchanged by it.

Each peer is installed by this script into a virtualenv of its own under .bench-venvs/ (reused
when present): `pip install 'pyinfra>=3,<4'`; `pip install ansible-core`, then community.docker
by `ansible-galaxy collection install` into the venv when Ansible Galaxy answers, else by
`pip install ansible` (the PyPI package that bundles the collections; from this machine Galaxy
does not resolve, so that is what happens here). The install used is printed.

SSH: both peers use the deployer's user and key (`inv lab.env`'s SSH_KEY_PATH) and its pinned
known_hosts with strict host key checking. Ansible keeps its default OpenSSH options (-C,
ControlPersist 60 s) with a control-socket folder per run, so no measured run reuses the
connection of the run before it.

Bytes: the rx byte counter of the droplet container's public interface (the one holding the
droplet's address), read with `docker exec` before and after each measured run: everything the
droplet received, the same way for every tool. The droplet also receives a little on its own
(S3 answers to PostgreSQL's WAL archiving, DNS); its idle rate, measured over 30 s after the
last run, is printed. The machine's load average at start and end is printed too: the lab shares
the machine with whatever else runs on it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labrun import REPO, LabRun  # noqa: E402

from remote.compose import parse_ps_json, states_from_ps  # noqa: E402
from remote.layout import RELEASE_ENV, RELEASE_IMAGES, RELEASE_META, RELEASE_STACK  # noqa: E402

LAB = {"LAB_NAME": "sdpeers", "LAB_API_PORT": "8799", "LAB_SUBNET": "10.69.0.0/24"}
VENVS = REPO / ".bench-venvs"
CHANGED_FILE = Path("api") / "app" / "main.py"
WAIT_TIMEOUT = 600          # the deployer's HEALTH_TIMEOUT default
IDLE_SECONDS = 30
DEPLOYER_ONLY = (RELEASE_ENV, RELEASE_META, RELEASE_IMAGES, RELEASE_STACK)


@dataclass
class Droplet:
    ip: str
    user: str
    key: str
    known_hosts: str
    port: int
    container: str
    iface: str
    project: str
    base: str

    def ssh_argv(self) -> list[str]:
        return ["ssh", "-i", self.key, "-p", str(self.port), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{self.user}@{self.ip}"]

    def run(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.ssh_argv(), command], capture_output=True, check=True, timeout=300)

    def rx_bytes(self) -> int:
        out = subprocess.run(["docker", "exec", self.container, "cat", f"/sys/class/net/{self.iface}/statistics/rx_bytes"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.strip())

    def services(self) -> str:
        """The project's containers as compose sees them: "9/9 up, api on IMAGE"."""
        out = self.run(f"docker compose -p {shlex.quote(self.project)} ps --all --format json").stdout.decode()
        rows = parse_ps_json(out)
        states = states_from_ps(rows)
        ok = sum(s.ok for s in states.values())
        api = next((r.get("Image", "?") for r in rows if r.get("Service") == "api"), "-")
        return f"{ok}/{len(states)} up, api on {api}"


@dataclass
class Result:
    tool: str
    version: str
    installed: str
    no_change_s: float = 0.0
    one_file_s: float = 0.0
    no_change_bytes: int = 0
    one_file_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def run_logged(argv: list[str], log: Path, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a tool with its output into ``log`` (not the terminal: a failing peer may echo its
    environment); on failure, name the log and stop."""
    res = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    log.write_text(f"$ {shlex.join(argv)}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}")
    if res.returncode != 0:
        raise SystemExit(f"{shlex.join(argv[:2])} failed with exit {res.returncode}: see {log}")
    return res


# --- installing the peers ---------------------------------------------------------------

def venv(name: str) -> Path:
    folder = VENVS / name
    if not (folder / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(folder / "bin" / "pip"), "install", "-q", "--upgrade", "pip"], check=True,
                       capture_output=True)
    return folder


def pip(folder: Path, *requirements: str) -> None:
    res = subprocess.run([str(folder / "bin" / "pip"), "install", "-q", *requirements], capture_output=True, text=True)
    if res.returncode != 0:
        print(res.stdout[-2000:], res.stderr[-2000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"pip install {' '.join(requirements)} failed in {folder}")


def install_pyinfra() -> tuple[Path, str, str]:
    folder = venv("pyinfra")
    if not (folder / "bin" / "pyinfra").exists():
        pip(folder, "pyinfra>=3,<4")
    version = subprocess.run([str(folder / "bin" / "pyinfra"), "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[-1].lstrip("v")
    return folder, f"pyinfra {version}", "pip install 'pyinfra>=3,<4'"


def ansible_env(folder: Path, home: Path) -> dict[str, str]:
    return {"PATH": f"{folder / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8", "ANSIBLE_HOME": str(home), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_COLLECTIONS_PATH": str(folder / "collections")}


def community_docker(folder: Path, env: dict[str, str]) -> str | None:
    """The version of community.docker this venv's Ansible finds, or None."""
    res = subprocess.run([str(folder / "bin" / "ansible-galaxy"), "collection", "list", "community.docker",
                          "--format", "json"], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        return None
    try:
        found = [v for paths in json.loads(res.stdout).values() for v in paths.values()]
    except (json.JSONDecodeError, AttributeError):
        return None
    return found[0]["version"] if found else None


def install_ansible(home: Path) -> tuple[Path, str, str]:
    folder = venv("ansible")
    marker = folder / ".collections-from"
    env = ansible_env(folder, home)
    if not (folder / "bin" / "ansible-playbook").exists():
        pip(folder, "ansible-core")
    if community_docker(folder, env) is None:
        galaxy = subprocess.run([str(folder / "bin" / "ansible-galaxy"), "collection", "install", "-p",
                                 str(folder / "collections"), "community.docker"],
                                capture_output=True, text=True, env=env, timeout=300)
        if galaxy.returncode == 0 and community_docker(folder, env):
            marker.write_text("pip install ansible-core; ansible-galaxy collection install community.docker\n")
        else:
            # Galaxy unreachable: the `ansible` package carries community.docker (and pins a
            # matching ansible-core)
            pip(folder, "ansible")
            marker.write_text("pip install ansible-core; Galaxy unreachable, so pip install ansible "
                              "(its bundled community.docker)\n")
    collection = community_docker(folder, env)
    if collection is None:
        raise SystemExit(f"community.docker is not found by the Ansible in {folder}")
    core = subprocess.run([str(folder / "bin" / "ansible-playbook"), "--version"], capture_output=True, text=True,
                          env=env, check=True).stdout.splitlines()[0]
    version = core.split("[core ")[-1].rstrip("]") if "[core " in core else core.split()[-1]
    how = marker.read_text().strip() if marker.exists() else "already installed"
    return folder, f"ansible-core {version} + community.docker {collection}", how


# --- the peers' own files -----------------------------------------------------------------

PYINFRA_DEPLOY = '''\
from pyinfra import host
from pyinfra.operations import files, server

dest = host.data.peer_dir
compose = f"cd {dest} && docker compose -p {host.data.project} -f compose.yml --env-file .env"
files.sync(name="Sync the stack", src=host.data.stack_dir, dest=dest, delete=True, exclude=["*/.env"])
server.shell(name="Compose up",
             commands=[f"{compose} up -d --build --wait --wait-timeout {host.data.wait_timeout}"])
server.shell(name="Container state", commands=[f"{compose} ps --all --format json"])
'''

ANSIBLE_PLAYBOOK = '''\
- hosts: droplet
  gather_facts: false
  tasks:
    - name: Sync the stack
      ansible.builtin.copy:
        src: "{{ stack_dir }}/"
        dest: "{{ peer_dir }}/"
        mode: preserve
    - name: Compose up
      community.docker.docker_compose_v2:
        project_src: "{{ peer_dir }}"
        project_name: "{{ project }}"
        files: [compose.yml]
        env_files: [.env]
        build: always
        wait: true
        wait_timeout: "{{ wait_timeout }}"
    - name: Container state
      ansible.builtin.command:
        cmd: docker compose -p {{ project }} -f compose.yml --env-file .env ps --all --format json
        chdir: "{{ peer_dir }}"
      changed_when: false
'''


class Peer:
    name = ""

    def __init__(self, work: Path, droplet: Droplet, stack: Path) -> None:
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        self.droplet = droplet
        self.stack = stack
        self.remote_dir = f"/home/{droplet.user}/peers/{self.name}"
        self.runs = 0

    def seed(self) -> None:
        """The peer's folder on the droplet, with its own copy of the live release's .env."""
        d = shlex.quote(self.remote_dir)
        live_env = shlex.quote(f"{self.droplet.base}/current/{RELEASE_ENV}")
        self.droplet.run(f"mkdir -p {d} && install -m 600 {live_env} {d}/.env")

    def run(self) -> None:
        raise NotImplementedError


class Pyinfra(Peer):
    name = "pyinfra"

    def __init__(self, work: Path, droplet: Droplet, stack: Path, venv_dir: Path) -> None:
        super().__init__(work, droplet, stack)
        self.bin = venv_dir / "bin" / "pyinfra"
        data = {"ssh_user": droplet.user, "ssh_port": droplet.port, "ssh_key": droplet.key,
                "ssh_known_hosts_file": droplet.known_hosts, "ssh_strict_host_key_checking": "yes",
                "ssh_allow_agent": False, "ssh_look_for_keys": False,
                "peer_dir": self.remote_dir, "stack_dir": str(stack), "project": droplet.project,
                "wait_timeout": WAIT_TIMEOUT}
        (self.work / "inventory.py").write_text(f"droplet = [({droplet.ip!r}, {data!r})]\n")
        (self.work / "deploy.py").write_text(PYINFRA_DEPLOY)

    def run(self) -> None:
        self.runs += 1
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
               "LANG": "C.UTF-8"}
        run_logged([str(self.bin), "-y", "inventory.py", "deploy.py"], self.work / f"run-{self.runs}.log",
                   cwd=self.work, env=env)


class Ansible(Peer):
    name = "ansible"

    def __init__(self, work: Path, droplet: Droplet, stack: Path, venv_dir: Path) -> None:
        super().__init__(work, droplet, stack)
        self.venv_dir = venv_dir
        ssh_args = f"-o UserKnownHostsFile={droplet.known_hosts} -o StrictHostKeyChecking=yes"
        inventory = {"all": {"children": {"droplet": {"hosts": {droplet.ip: {
            "ansible_user": droplet.user, "ansible_port": droplet.port,
            "ansible_ssh_private_key_file": droplet.key, "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": "/usr/bin/python3",
            "peer_dir": self.remote_dir, "stack_dir": str(stack), "project": droplet.project,
            "wait_timeout": WAIT_TIMEOUT}}}}}}
        (self.work / "inventory.json").write_text(json.dumps(inventory, indent=1))
        (self.work / "playbook.yml").write_text(ANSIBLE_PLAYBOOK)

    def run(self) -> None:
        self.runs += 1
        env = ansible_env(self.venv_dir, self.work / "home")
        # a control-socket folder per run: no run starts on the connection of the one before
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(Path(tempfile.mkdtemp(prefix="cp", dir=self.work)))
        run_logged([str(self.venv_dir / "bin" / "ansible-playbook"), "-i", "inventory.json", "playbook.yml"],
                   self.work / f"run-{self.runs}.log", cwd=self.work, env=env)


# --- the droplet ----------------------------------------------------------------------------

def find_droplet(lab: LabRun) -> Droplet:
    ip = lab.last_run()["target"]["ip"]
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=stackdeploy.lab={LAB['LAB_NAME']}",
                          "--filter", "label=stackdeploy.lab.kind=droplet"],
                         capture_output=True, text=True, check=True).stdout.split()
    if len(ids) != 1:
        raise SystemExit(f"expected one droplet container of lab {LAB['LAB_NAME']}, found {len(ids)}")
    addrs = subprocess.run(["docker", "exec", ids[0], "ip", "-o", "-4", "addr", "show"],
                           capture_output=True, text=True, check=True).stdout
    iface = next((line.split()[1] for line in addrs.splitlines() if f" {ip}/" in line), None)
    if iface is None:
        raise SystemExit(f"no interface of droplet container {ids[0]} holds {ip}")
    project = lab.values.get("PROJECT_NAME") or "stackdeploy"
    return Droplet(ip=ip, user=lab.values.get("DEPLOY_USER") or "deploy", key=lab.values["SSH_KEY_PATH"],
                   known_hosts=lab.env["SSH_KNOWN_HOSTS"], port=int(lab.values.get("SSH_PORT") or 22),
                   container=ids[0], iface=iface, project=project,
                   base=lab.values.get("REMOTE_BASE_DIR") or f"/opt/{project}")


def take_rendered_files(droplet: Droplet, stack: Path) -> list[str]:
    """Write into ``stack`` the live release's files that differ from it (what the deployer
    renders: the test CA's traefik.yml, CA roots); never .env or the release's metadata."""
    skip = " ".join(f"! -name {shlex.quote(n)}" for n in DEPLOYER_ONLY)
    current = shlex.quote(f"{droplet.base}/current")
    listing = droplet.run(f"cd {current} && find . -type f {skip} -exec sha256sum {{}} +").stdout.decode()
    taken = []
    for line in listing.splitlines():
        digest, rel = line.split(None, 1)
        rel = rel.removeprefix("./")
        local = stack / rel
        if local.is_file() and _sha256(local) == digest:
            continue
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(droplet.run(f"cat {current}/{shlex.quote(rel)}").stdout)
        taken.append(rel)
    return sorted(taken)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def change_one_file(stack: Path, tool: str) -> None:
    target = stack / CHANGED_FILE
    target.write_text(target.read_text() + f"# peers benchmark: one-file change for {tool}\n")


def update_only(lab: LabRun, work: Path, ours: Result, label: str) -> None:
    """`inv deploy --update-only`. A failed run is a figure too: noted, and its run folder (redacted
    by the deployer) kept beside the peers' logs, as lab.down removes the lab's."""
    _, res = lab.inv("deploy", "--update-only", ok=False)
    if res.returncode:
        folder = sorted((lab.tmp / "runs").iterdir())[-1]
        kept = work / "stackdeploy" / folder.name
        shutil.copytree(folder, kept)
        error = (str(lab.last_run().get("error")).splitlines() or [""])[0][:200]
        note = f"{label} run failed: exit {res.returncode}, {error} (run folder {kept})"
        ours.notes.append(note)
        print(f"  ! {note}", flush=True)


def measured(label: str, droplet: Droplet, action: Callable[[], None]) -> tuple[float, int]:
    before = droplet.rx_bytes()
    t0 = time.monotonic()
    action()
    seconds = time.monotonic() - t0
    received = droplet.rx_bytes() - before
    print(f"  {label:24} {seconds:7.1f} s {received:12,d} B   {droplet.services()}", flush=True)
    return seconds, received


def machine() -> dict[str, str | int]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    return {"nproc": os.cpu_count() or 0, "cpu": cpu, "kernel": platform.release()}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def report(results: list[Result], idle_bps: float, meta: dict[str, Any]) -> None:
    m = meta["machine"]
    print(f"\n{meta['date']}  nproc {m['nproc']}, {m['cpu']}; load average (1 min) {m['load_at_start']:.1f} "
          f"at start, {m['load_at_end']:.1f} at end")
    print(f"droplet received {idle_bps:,.0f} B/s while idle (included in the bytes below); "
          "a ratio below 1: ours takes less\n")
    head = f"{'tool':46} {'no-change s':>11} {'one-file s':>10} {'bytes no-change':>16} {'bytes one-file':>15}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r.version:46} {r.no_change_s:11.1f} {r.one_file_s:10.1f} {r.no_change_bytes:16,d} "
              f"{r.one_file_bytes:15,d}")
    ours = results[-1]
    for peer in results[:-1]:
        print(f"{'ours/' + peer.tool:46} {ratio(ours.no_change_s, peer.no_change_s):>11} "
              f"{ratio(ours.one_file_s, peer.one_file_s):>10} "
              f"{ratio(ours.no_change_bytes, peer.no_change_bytes):>16} "
              f"{ratio(ours.one_file_bytes, peer.one_file_bytes):>15}")
    print()
    for r in results:
        print(f"{r.tool}: {r.installed}" + "".join(f"; {n}" for n in r.notes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    VENVS.mkdir(exist_ok=True)
    lab = LabRun(LAB, CHECK_RATE_LIMIT="false")
    # outside the lab's folder, which lab.down removes: a failing peer's log must outlive it
    work = Path(tempfile.mkdtemp(prefix="sdpeers-tools-"))
    load_at_start = os.getloadavg()[0]
    try:
        print("installing the peers ...", flush=True)
        pyinfra_venv, pyinfra_version, pyinfra_how = install_pyinfra()
        ansible_venv, ansible_version, ansible_how = install_ansible(work / "ansible" / "home")
        print(f"  {pyinfra_version}: {pyinfra_how}\n  {ansible_version}: {ansible_how}", flush=True)

        print("lab up, full deploy ...", flush=True)
        lab.up()
        seconds, _ = lab.inv("deploy")
        droplet = find_droplet(lab)
        print(f"  full deploy {seconds:.1f} s; droplet {droplet.ip} (container {droplet.container[:12]}, "
              f"{droplet.iface})", flush=True)
        taken = take_rendered_files(droplet, lab.stack)
        print(f"  rendered by the deployer, given to the peers too: {', '.join(taken) or 'nothing'}", flush=True)

        peers: list[tuple[Peer, Result]] = [
            (Pyinfra(work, droplet, lab.stack, pyinfra_venv), Result("pyinfra", pyinfra_version, pyinfra_how)),
            (Ansible(work, droplet, lab.stack, ansible_venv), Result("ansible", ansible_version, ansible_how)),
        ]
        results = []
        for peer, result in peers:
            print(f"{peer.name}:", flush=True)
            peer.seed()
            measured("warm-up (not counted)", droplet, peer.run)
            result.no_change_s, result.no_change_bytes = measured("no change", droplet, peer.run)
            change_one_file(lab.stack, peer.name)
            result.one_file_s, result.one_file_bytes = measured("one file", droplet, peer.run)
            results.append(result)

        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "core", "deploy", "remote", "lab", "stack"],
                               cwd=REPO).returncode != 0
        ours = Result("stackdeploy", f"stackdeploy {head}{'+changes' if dirty else ''} (update-only)",
                      "this checkout" + (", with uncommitted changes" if dirty else ""))
        print("stackdeploy:", flush=True)

        measured("warm-up (not counted)", droplet, lambda: update_only(lab, work, ours, "warm-up"))
        ours.no_change_s, ours.no_change_bytes = measured("no change", droplet,
                                                          lambda: update_only(lab, work, ours, "no-change"))
        pushed = lab.last_run()["details"].get("push", {}).get("bytes_sent", 0)
        change_one_file(lab.stack, "stackdeploy")
        ours.one_file_s, ours.one_file_bytes = measured("one file", droplet,
                                                        lambda: update_only(lab, work, ours, "one-file"))
        details = lab.last_run()["details"]
        ours.notes.append(f"its own push counts {pushed:,d} B (no change) and "
                          f"{details.get('push', {}).get('bytes_sent', 0):,d} B (one file); rebuilt "
                          f"{','.join(details.get('up', {}).get('rebuilt', [])) or '-'}")
        results.append(ours)

        # at the end, not after the full deploy: its first backup is still uploading then
        before = droplet.rx_bytes()
        time.sleep(IDLE_SECONDS)
        idle_bps = (droplet.rx_bytes() - before) / IDLE_SECONDS

        meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": {**machine(), "load_at_start": load_at_start, "load_at_end": os.getloadavg()[0]},
                "lab": LAB, "idle_rx_bytes_per_s": round(idle_bps, 1), "rendered_files": taken}
        report(results, idle_bps, meta)
        if args.json:
            ratios = {f"ours/{p.tool}": {k: (getattr(ours, k) / getattr(p, k) if getattr(p, k) else None)
                                         for k in ("no_change_s", "one_file_s", "no_change_bytes", "one_file_bytes")}
                      for p in results[:-1]}
            args.json.write_text(json.dumps({**meta, "tools": [asdict(r) for r in results], "ratios": ratios},
                                            indent=2) + "\n")
            print(f"figures written to {args.json}")
        return 0
    finally:
        print(f"the peers' inventories, deploy files and logs: {work}")
        if not args.keep:
            lab.down()


if __name__ == "__main__":
    raise SystemExit(main())
