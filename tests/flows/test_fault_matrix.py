"""The fault matrix, orchestration half (issue 12): each test injects one fault into a deploy of
the fake world and checks its clean ending with tests/flows/faults.assert_clean_ending (exit code,
a message naming the fix, a well-formed artifact set, the lock, no secret, nothing lost).

Every test starts from the same droplet: one full deploy made once for this module, whose files
and Docker state are restored before each test (a deploy costs about half a second here)."""
from __future__ import annotations

import errno
import getpass
import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy import flows
from remote.lock import LockHolder
from tests.flows.conftest import Outcome, World, make_world
from tests.flows.fakes import FakeDocker, Unreachable, gone_pid
from tests.flows.faults import INTERRUPTS, Trap, assert_clean_ending, pushed, release_meta_outcome, track_steps

FULL = ["token-check", "provision", "connect", "bootstrap", "lock", "push", "build", "migrate", "switch", "up",
        "checks", "collect", "drift", "backup-checks"]
UPDATE = ["token-check", "discover", "connect", "lock", "push", "build", "migrate", "switch", "up", "checks",
          "collect", "drift", "backup-checks"]
AFTER_UP = {"checks", "collect", "drift", "backup-checks"}        # the new release is live and healthy by then
# The checks, collect and drift run in threads beside the backup checks (verify's main thread)
BESIDE = {"checks": "backup-checks", "collect": "backup-checks", "drift": "backup-checks"}
CUTOVER = {"migrate", "up"}     # steps whose first command is already under the interrupt guard
ME = f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass
class Baseline:
    world: World
    snapshot: Path
    docker: FakeDocker
    env: str
    live: str


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    world = make_world(tmp_path_factory.mktemp("matrix"))
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    snapshot = world.tmp / "snapshot"
    for name, path in (("droplet", world.base), ("stack", world.stack)):
        shutil.copytree(path, snapshot / name, symlinks=True)
    live = world.current()
    assert live is not None
    assert {"pg-data", "redis-data"} <= world.docker.volumes    # the data "nothing lost" is about
    return Baseline(world, snapshot, world.docker.copy(), world.env_file.read_text(), live)


@pytest.fixture
def world(baseline: Baseline) -> World:
    """The baseline droplet with one release live, and a local change to ship (the api, and django
    so that its migration runs)."""
    w = baseline.world
    for name, path in (("droplet", w.base), ("stack", w.stack)):
        shutil.rmtree(path)
        shutil.copytree(baseline.snapshot / name, path, symlinks=True)
    w.env_file.write_text(baseline.env)
    fresh = World(tmp=w.tmp, stack=w.stack, base=w.base, logs=w.logs, env_file=w.env_file,
                  docker=baseline.docker.copy())
    for changed in (fresh.stack / "api" / "app" / "main.py", fresh.stack / "django" / "config" / "settings.py"):
        changed.write_text(changed.read_text() + "\n# the next release\n")
    return fresh


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return track_steps(monkeypatch)


def _deploy(world: World, update_only: bool) -> Outcome:
    return world.invoke("deploy", flows.deploy, mode="update" if update_only else "full", update_only=update_only)


# --- Ctrl-C and SIGTERM in each step ----------------------------------------------------------

@pytest.mark.parametrize("signal_name", sorted(INTERRUPTS))
@pytest.mark.parametrize("update_only,step", [(False, s) for s in FULL] + [(True, s) for s in UPDATE],
                         ids=[f"full-{s}" for s in FULL] + [f"update-{s}" for s in UPDATE])
def test_an_interrupt_in_each_step_ends_cleanly(world, baseline, running, signal_name, update_only, step):
    trap = Trap(step, signal_name, running).install(world)
    out = _deploy(world, update_only)
    assert trap.fired_at, f"nothing reached an edge during {step}"
    if step in BESIDE and signal_name == "sigterm":   # a signal interrupts the main thread's step
        # the main thread was in the backup checks or between steps (a row named after the task
        # says so); the step in its thread went on
        assert len({s["name"] for s in out.manifest["steps"] if s["message"] == "interrupted"}
                   & {BESIDE[step], "deploy"}) == 1
    else:
        assert out.step(step)["status"] == "failed" and out.step(step)["message"] == "interrupted"
    rerun = "`inv deploy --update-only` again" if update_only else "`inv deploy` again"
    live = pushed(out) if step in AFTER_UP else baseline.live
    assert_clean_ending(world, out, code=INTERRUPTS[signal_name], outcome="interrupted", live=live,
                        fix=[f"interrupted by {'SIGTERM' if signal_name == 'sigterm' else 'Ctrl-C'}", rerun,
                             "inv verify"], volumes=baseline.docker.volumes)
    if step in CUTOVER:
        assert release_meta_outcome(world, out) == "interrupted"
    assert all(d.closed for d in world.droplets)


# --- the SSH connection drops -----------------------------------------------------------------

@pytest.mark.parametrize("step,match,update_only", [("push", ".upload-", False), ("up", "--scale", True)],
                         ids=["mid-push", "mid-up"])
def test_a_dropped_ssh_connection_names_the_fix_and_the_lock_left_held(world, baseline, running, step, match,
                                                                       update_only):
    trap = Trap(step, "drop", running, match=match).install(world)
    out = _deploy(world, update_only)
    assert trap.fired_at and match in trap.fired_at
    assert out.step(step)["status"] == "failed"
    # Before the switch nothing live changed; after it, the release switched to stays current
    # (restoring needs the connection): the message says so and how to go on.
    live = baseline.live if step == "push" else pushed(out)
    assert_clean_ending(world, out, code=1, outcome="failed", live=live, lock="held", holder=ME,
                        fix=["SSH connection to 203.0.113.10 dropped", "run the same command again",
                             "inv lock.release --if-stale"], volumes=baseline.docker.volumes)
    assert "Traceback" not in out.message and "error-traceback.txt" not in out.files


def test_a_drop_mid_push_whose_connection_still_looks_open_releases_the_lock_on_a_fresh_one(world, baseline, running):
    """The lab's drop mid-push (CI): the upload fails, and the lock's release on the same connection
    fails too before paramiko notices it is gone. The release is tried once more on a new
    connection, and the lock is free for the next run."""
    trap = Trap("push", "stale", running, match=".upload-").install(world)
    out = _deploy(world, False)
    assert trap.fired_at and ".upload-" in trap.fired_at
    assert out.step("push")["status"] == "failed"
    assert_clean_ending(world, out, code=1, outcome="failed", live=baseline.live, lock="released",
                        fix=["SSH connection to 203.0.113.10 dropped", "run the same command again"],
                        volumes=baseline.docker.volumes)


def test_a_droplet_rebooting_mid_build_keeps_the_runs_own_error_and_reports_the_lock(world, baseline, running):
    """The reconnects for the lock release and the collection meet a refused port 22: the run
    still ends with its own error (the dropped connection), not the reconnect's."""
    trap = Trap("build", "reboot", running).install(world)
    out = _deploy(world, update_only=True)
    assert trap.fired_at
    assert_clean_ending(world, out, code=1, outcome="failed", live=baseline.live, lock="held", holder=ME,
                        fix=["SSH connection to 203.0.113.10 dropped", "run the same command again",
                             "inv lock.release --if-stale"], volumes=baseline.docker.volumes)
    assert "NoValidConnectionsError" not in out.manifest["error"]


def test_a_brief_drop_mid_up_switches_back_and_says_what_serves(world, baseline, running):
    """The connection dies under the cutover and the next command reconnects (a network blip):
    the live release is put back, and the run says which one serves."""
    trap = Trap("up", "blip", running, match="--scale").install(world)
    out = _deploy(world, update_only=True)
    assert trap.fired_at
    assert_clean_ending(world, out, code=1, outcome="failed", live=baseline.live,
                        fix=["SSH connection to 203.0.113.10 dropped", f"still serving release {baseline.live}",
                             "run the same command again"], volumes=baseline.docker.volumes)
    assert out.manifest["details"]["live_release"] == baseline.live
    assert release_meta_outcome(world, out) == "failed"


# --- the droplet's disk fills ----------------------------------------------------------------

def test_disk_full_during_the_upload_names_the_fix_and_leaves_no_partial_file(world, baseline):
    world.disk_full_on = ".upload-"
    out = _deploy(world, update_only=True)
    assert out.step("push")["status"] == "failed"
    assert_clean_ending(world, out, code=1, outcome="failed", live=baseline.live,
                        fix=["failed over SFTP: Failure", "disk is full", "df -h", "docker system prune",
                             "RELEASES_KEEP"])
    assert not list((world.base / "releases").glob("*.tmp-*")), "a half-written upload was left on the droplet"


def test_disk_full_during_the_build_names_the_fix(world, baseline):
    world.docker.build_output = (1, "#12 ERROR: failed to copy files: write /var/lib/docker/tmp/x: "
                                    "no space left on device\n")
    out = _deploy(world, update_only=True)
    assert out.step("build")["status"] == "failed"
    assert_clean_ending(world, out, code=1, outcome="failed", live=baseline.live,
                        fix=["disk is full (no space left on device)", "docker system prune", "RELEASES_KEEP",
                             "MIN_FREE_MB", f"still serving release {baseline.live}"])
    assert release_meta_outcome(world, out) == "failed"


# --- the local disk under LOGS_DIR fills -------------------------------------------------------

def _fill_logs_disk(world: World, monkeypatch: pytest.MonkeyPatch, full: list[bool]) -> None:
    """Writes under LOGS_DIR fail with ENOSPC once ``full[0]`` is true (reads still work)."""
    open_, mkdir = Path.open, Path.mkdir

    def refuse(path: Path) -> None:
        if full[0] and path.is_relative_to(world.logs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def full_open(self: Path, mode: str = "r", *args, **kwargs):
        if set(mode) & set("wax+"):
            refuse(self)
        return open_(self, mode, *args, **kwargs)

    def full_mkdir(self: Path, *args, **kwargs):
        if not self.exists():
            refuse(self)
        return mkdir(self, *args, **kwargs)
    monkeypatch.setattr(Path, "open", full_open)
    monkeypatch.setattr(Path, "mkdir", full_mkdir)


def test_local_disk_full_mid_run_names_logs_dir_and_releases_the_lock(world, baseline, running, monkeypatch):
    full = [False]
    _fill_logs_disk(world, monkeypatch, full)
    world.fault = lambda edge, detail: full.__setitem__(0, full[0] or running[-1:] == ["push"])
    out = _deploy(world, update_only=True)
    assert full[0]
    assert_clean_ending(world, out, code=1, outcome=None, live=baseline.live, fix=["No space left on device",
                        "LOGS_DIR", f"the run folder {out.run.folder} is incomplete"])
    assert "Traceback" not in out.message
    log = (out.run.folder / "run.log").read_text()
    assert "[push] start" in log and "[build]" not in log      # what was written before is whole


def test_local_disk_full_before_the_run_names_logs_dir_and_touches_nothing(world, baseline, monkeypatch):
    _fill_logs_disk(world, monkeypatch, [True])
    shutil.rmtree(world.logs)                   # its first run folder cannot be made
    out = _deploy(world, update_only=True)
    assert out.run.folder is None
    assert_clean_ending(world, out, code=1, outcome=None, live=baseline.live,
                        fix=["cannot create a run folder", "No space left on device", "LOGS_DIR"])
    assert world.droplets == [] and world.cloud.calls == []


# --- the deploy lock ---------------------------------------------------------------------------

def test_two_concurrent_full_deploys_one_proceeds_the_other_names_the_holder(world, baseline):
    done = {name: threading.Event() for name in "ab"}
    first: list[str] = []

    def hold_the_build(edge: str, detail: str) -> None:
        # the first deploy to reach its build (it holds the lock) waits until the other ended
        if edge == "run" and " build " in detail and not first:
            first.append(threading.current_thread().name)
            assert done["b" if first[0] == "a" else "a"].wait(30), "the other deploy did not end"
    world.fault = hold_the_build
    outs: dict[str, object] = {}

    def deploy(name: str) -> None:
        try:
            outs[name] = _deploy(world, update_only=False)
        finally:
            done[name].set()
    threads = [threading.Thread(target=deploy, args=(n,), name=n) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winner, loser = outs[first[0]], outs["b" if first[0] == "a" else "a"]
    assert winner.exit_code == 0, winner.message
    assert world.built() == [sorted(world.built()[0])] and len(world.built()) == 1   # only one built
    assert "push" not in loser.step_names and loser.step("lock")["status"] == "failed"
    assert_clean_ending(world, loser, code=5, outcome="failed", live=pushed(winner),
                        fix=[f"is held by {ME}", f"deploying {pushed(winner)}", "LOCK_WAIT"])


def test_a_stale_lock_from_a_killed_deployer_is_reported_with_the_command_that_frees_it(world, baseline):
    pid = gone_pid()
    (world.base / "lock").mkdir()
    holder = LockHolder(who=ME, when="2026-11-26T10:00:00+00:00", release="r-killed", command="inv deploy", pid=pid)
    (world.base / "lock" / "holder.json").write_text(json.dumps(holder.__dict__))
    out = _deploy(world, update_only=False)
    assert "push" not in out.step_names
    assert_clean_ending(world, out, code=5, outcome="failed", live=baseline.live, lock="held", holder=ME,
                        fix=[f"process {pid} on this machine", "deploying r-killed", "inv lock.release --if-stale"])
    assert json.loads((world.base / "lock" / "holder.json").read_text())["pid"] == pid


# --- settings, cloud, DNS, reachability --------------------------------------------------------

def test_a_rejected_cloud_token_stops_before_anything_is_touched(world, baseline):
    world.cloud.token_ok = False
    out = _deploy(world, update_only=False)
    assert_clean_ending(world, out, code=3, outcome="config-error", live=baseline.live,
                        fix=["rejected the API token", "DIGITALOCEAN_TOKEN"])
    assert world.cloud.calls == ["check_token"] and world.droplets == []


def test_a_missing_stack_secret_stops_an_update_before_the_droplet_is_reached(world, baseline):
    world.set_env(REDIS_PASSWORD=None)
    out = _deploy(world, update_only=True)
    assert_clean_ending(world, out, code=2, outcome="config-error", live=baseline.live, fix=["REDIS_PASSWORD"])
    assert world.droplets == []


@pytest.mark.parametrize("task", ["deploy", "verify"])
def test_an_unreachable_droplet_names_the_fix(world, baseline, task):
    world.connector = Unreachable()
    if task == "deploy":
        out = _deploy(world, update_only=True)
        expected = dict(code=1, outcome="failed", fix=["cannot reach 203.0.113.10:22", "firewall allows SSH"])
    else:
        out = world.invoke("verify", flows.verify_only, mode="verify")
        expected = dict(code=4, outcome="partial", fix=["remote collection skipped", "SSH_KEY_PATH",
                                                        "inv provision updates the allowlist"])
    assert_clean_ending(world, out, live=baseline.live, **expected)
    if task == "deploy":
        assert out.step("connect")["status"] == "failed" and "push" not in out.step_names
    else:
        assert out.step("checks")["status"] == "ok" and out.step("collect")["status"] == "skipped"


def test_dns_pointing_elsewhere_is_reported_with_the_record_to_fix(world, baseline):
    """The deploy itself worked (the checks ran against the droplet's IP): a warning, exit 0."""
    world.checks.dns_answer = ["198.51.100.99"]
    out = _deploy(world, update_only=True)
    assert out.step("checks")["status"] == "warning"
    [dns] = [c for c in out.manifest["checks"] if c["name"] == "dns"]
    assert dns["status"] == "warn"
    assert_clean_ending(world, out, code=0, outcome="success", live=pushed(out),
                        fix=["app.example.test resolves to 198.51.100.99", "point its A record at 203.0.113.10"])
    assert "198.51.100.99" in (out.run.folder / "http" / "dns.txt").read_text()
