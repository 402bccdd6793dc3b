"""The lab as deploy sees it: the fake API + ContainerBackend, driven by python-digitalocean."""
from __future__ import annotations

import time

import pytest

from lab.docker import list_labelled
from lab.droplets import ContainerBackend
from lab.droplets.backend import DROPLET_LABEL

from .conftest import reachable, ssh

pytestmark = [pytest.mark.docker, pytest.mark.lab]
TOKEN = "lab-test-token-0123456789"


@pytest.fixture
def api(lab_cfg, monkeypatch):
    from lab.fake_do.server import FakeDigitalOcean
    fake = FakeDigitalOcean(token=TOKEN, backend=ContainerBackend(lab_cfg, log=lambda m: None),
                            operator_ip=lab_cfg.gateway)
    url = fake.start(host="127.0.0.1", port=0)
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", url)
    monkeypatch.setenv("PYTHON_DIGITALOCEAN_REQUEST_TIMEOUT_SEC", "10")
    yield fake
    fake.stop()


def test_droplet_through_python_digitalocean(api, keypair, lab_cfg):
    import digitalocean
    key = digitalocean.SSHKey(token=TOKEN, name="op", public_key=keypair.with_suffix(".pub").read_text())
    key.create()
    droplet = digitalocean.Droplet(token=TOKEN, name="web-1", region="fra1", size="s-1vcpu-1gb",
                                   image="ubuntu-24-04-x64", ssh_keys=[key.id], tags=["stack"])
    droplet.create()
    deadline = time.monotonic() + 180
    while droplet.status != "active":
        assert time.monotonic() < deadline, "droplet never became active"
        time.sleep(1)
        droplet.load()
    ip = droplet.ip_address
    assert ip.startswith(lab_cfg.subnet.rsplit(".", 1)[0])
    # Created without user data: a bare cloud image, whose cloud-init gives the account's key
    # (from the create request, through the seed's meta-data) to the image's default user.
    with ssh(ip, keypair, "debian") as c:
        assert "status: done" in c.run("cloud-init status --wait", hide=True, timeout=180).stdout
        assert c.run("hostname", hide=True).stdout.strip() == "web-1"

    # A Cloud Firewall allowing SSH from somewhere else closes port 22 to us ...
    fw = digitalocean.Firewall(token=TOKEN, name="stack-fw", droplet_ids=[droplet.id], inbound_rules=[
        digitalocean.InboundRule(protocol="tcp", ports="22",
                                 sources=digitalocean.Sources(addresses=["203.0.113.9/32"]))],
        outbound_rules=[])
    fw.create()
    deadline = time.monotonic() + 20
    while reachable(ip, 22, timeout=1) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not reachable(ip, 22, timeout=2)
    # ... and deleting it opens the droplet again.
    fw.destroy()
    deadline = time.monotonic() + 20
    while not reachable(ip, 22, timeout=1) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert reachable(ip, 22)

    droplet.destroy()
    label = f"{DROPLET_LABEL}={droplet.id}"
    deadline = time.monotonic() + 60

    def left() -> list[str]:   # the container goes first, its disk (a named volume) right after
        return list_labelled("container", lab_cfg.label, label) + list_labelled("volume", lab_cfg.label, label)
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left() == []
