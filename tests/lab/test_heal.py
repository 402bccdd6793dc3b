"""The lab heals: `inv lab.up` recovers a lab whose state folder was removed under it or whose
service containers crashed or were stopped, `inv lab.status` says which service is in what
state, and droplets (which hold what was deployed) are never removed without being asked."""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import requests

from lab import control, state
from lab.docker import docker, inspect
from lab.services import dns as labdns
from lab.services import pebble, registry
from lab.services import s3 as labs3
from lab.services.containers import container_name, service

from .conftest import make_cfg
from .test_tasks import inv, project  # noqa: F401 - project is a fixture

pytestmark = [pytest.mark.docker, pytest.mark.lab]


def _remove_state(state_dir: Path, tmp_path: Path) -> None:
    """The state folder gone from its path in one step: the lab API still writes into it (CI at
    e043569 had rmtree fail with "Directory not empty" as a file appeared mid-removal)."""
    gone = tmp_path / "removed-state"
    state_dir.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)


def _until(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _is_api(pid: int) -> bool:
    try:
        return b"lab.fake_do" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _all_running(status: str) -> None:
    assert "API: running at" in status, status
    for what in ("DNS server", "ACME CA (Pebble)", "container registry"):
        assert re.search(rf"^{re.escape(what)}: running \(", status, re.M), status
    assert re.search(r"^S3: https://\S+ \(running\)$", status, re.M), status
    assert "fix:" not in status, status


@pytest.mark.parametrize("engine_restarted_dns", [False, True], ids=["services-kept-running", "dns-crash-loop"])
def test_up_recovers_a_lab_whose_state_folder_was_removed(project, tmp_path, images, engine_restarted_dns):  # noqa: F811
    cfg = make_cfg(tmp_path)
    try:
        inv(project, cfg, "lab.up")
        old_pid = state.read(cfg.state_dir)["pid"]
        _remove_state(cfg.state_dir, tmp_path)      # `git clean -xfd`, a new checkout, rm -rf .lab
        if engine_restarted_dns:
            # A reboot or a dockerd restart brings the DNS server back without its zones folder:
            # it crash-loops (the failure `inv lab.up` used to end with, its log and no way out).
            docker("restart", container_name(cfg, labdns.ROLE))
            _until(lambda: service(cfg, labdns.ROLE)["restarts"] > 0, "knotd never crashed")
        status = inv(project, cfg, "lab.status").stdout
        assert f"API: running without its state folder (pid {old_pid})" in status
        if engine_restarted_dns:
            assert re.search(r"^DNS server: (restarting \(\d+ restarts, last exit code \d+\)|"
                             r"running \(restarted \d+ times\))", status, re.M), status
        assert "fix: `inv lab.up`" in status

        up = inv(project, cfg, "lab.up")
        assert f"lab API: stopped pid {old_pid}" in up.stderr
        if engine_restarted_dns:
            assert "lab dns: replacing" in up.stderr
        assert not _is_api(old_pid)
        _all_running(inv(project, cfg, "lab.status").stdout)
        # What a deploy needs works again: the new API's domain is served by the DNS server (a
        # kept knotd would read the removed folder), Pebble and the registry answer with the new
        # state folder's CAs and token.
        st = state.read(cfg.state_dir)
        assert labdns.soa_serial(cfg.dns_ip, cfg.domain)
        assert requests.get(st["acme_directory"], verify=st["acme_ca"], timeout=10).status_code == 200
        assert registry.answers(cfg, st["token"])
    finally:
        control.down(cfg, log=lambda m: None)


def test_status_names_each_broken_service_and_up_brings_them_back(project, tmp_path, images):  # noqa: F811
    cfg = make_cfg(tmp_path)
    try:
        inv(project, cfg, "lab.up")
        _all_running(inv(project, cfg, "lab.status").stdout)
        docker("stop", container_name(cfg, registry.ROLE))                 # stopped by hand
        docker("rm", "-f", container_name(cfg, pebble.ROLE))               # removed by hand
        docker("kill", container_name(cfg, labs3.ROLE))                    # killed (OOM, SIGKILL)
        (labdns.zones_dir(cfg) / "zones.conf").unlink()                     # a crash at start ...
        docker("restart", container_name(cfg, labdns.ROLE))                # ... in a restart loop
        _until(lambda: service(cfg, labdns.ROLE)["restarts"] > 0, "knotd never crashed")

        status = inv(project, cfg, "lab.status").stdout
        assert re.search(r"^container registry: exited \(exit code \d+\)", status, re.M), status
        assert re.search(r"^ACME CA \(Pebble\): missing", status, re.M), status
        assert re.search(r"^S3: https://\S+ \((exited \(exit code 137\)|running \(restarted \d+ times\)|"
                         r"restarting .*)\)$", status, re.M), status
        assert re.search(r"^DNS server: (restarting \(\d+ restarts, last exit code \d+\)|"
                         r"running \(restarted \d+ times\))", status, re.M), status
        assert status.rstrip().endswith("fix: `inv lab.up` replaces the lab services that are not running "
                                        "and restarts the API")
        as_json = inv(project, cfg, "lab.status", "--json").stdout
        services = __import__("json").loads(as_json)["services"]
        assert services["pebble"]["state"] == "missing" and services["registry"]["state"] == "exited"

        up = inv(project, cfg, "lab.up")
        assert re.search(r"lab registry: replacing \S+, which is exited \(exit code \d+\)", up.stderr)
        assert "lab dns: replacing" in up.stderr and "lab pebble: " in up.stderr
        _all_running(inv(project, cfg, "lab.status").stdout)
        st = state.read(cfg.state_dir)
        assert labdns.soa_serial(cfg.dns_ip, cfg.domain)
        assert registry.answers(cfg, st["token"])
        assert labs3.works(cfg, labs3.read_credentials(cfg))       # a new moto, a new key, the bucket
    finally:
        control.down(cfg, log=lambda m: None)


def test_droplets_the_api_no_longer_knows_are_named_never_removed(project, tmp_path, images):  # noqa: F811
    cfg = make_cfg(tmp_path)
    try:
        inv(project, cfg, "lab.up")
        st = state.read(cfg.state_dir)
        auth = {"Authorization": f"Bearer {st['token']}"}
        r = requests.post(st["api_url"] + "droplets", headers=auth, timeout=10, json={
            "name": "web-1", "region": "fra1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64",
            "ssh_keys": [], "tags": []})
        assert r.status_code == 202, r.text
        did = r.json()["droplet"]["id"]
        _until(lambda: requests.get(st["api_url"] + f"droplets/{did}", headers=auth, timeout=5)
               .json()["droplet"]["status"] == "active", "the droplet never became active", timeout=180)
        droplet = f"{cfg.name}-droplet-{did}"
        _remove_state(cfg.state_dir, tmp_path)

        up = inv(project, cfg, "lab.up", check=False)
        assert up.returncode == 2 and "Traceback" not in up.stderr
        assert droplet in up.stderr and "run `inv lab.down`" in up.stderr and "then `inv lab.up`" in up.stderr
        assert inspect("container", droplet)["State"]["Running"], "lab.up removed or stopped a droplet"
        status = inv(project, cfg, "lab.status").stdout
        assert f"droplet {did}: web-1" in status and "(not known to the lab API)" in status
        assert f"fix: droplets {did} remain from a removed state folder; `inv lab.down`" in status

        # The command named is the way out: down (the API left without its state stops too), up.
        inv(project, cfg, "lab.down")
        assert inspect("container", droplet) is None and not _is_api(st["pid"])
        assert inv(project, cfg, "lab.status").stdout.rstrip().endswith("the lab is not up: `inv lab.up` starts it")
        inv(project, cfg, "lab.up")
        _all_running(inv(project, cfg, "lab.status").stdout)
    finally:
        control.down(cfg, log=lambda m: None)
