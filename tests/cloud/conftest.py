from __future__ import annotations

import dataclasses

import pytest

from deploy import hostkey
from deploy.cloud import CloudSpec
from deploy.redact import SecretRegistry
from lab.fake_do import FakeDigitalOcean
from tests.fake_do.helpers import RecordingBackend

TOKEN = "dop_v1_cloudtest_secret_token_abcdef0123456789"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC4jrRa0yZJ6g+UZ+MjK3caPGp7kdFgadfOjU5smSsEk op@laptop"


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend(ip="127.0.0.1")


HOST_KEY = hostkey.generate(SecretRegistry())


@pytest.fixture
def fake(backend):
    api = FakeDigitalOcean(TOKEN, backend=backend, operator_ip="198.51.100.7", max_per_page=2)
    api.start()
    yield api
    api.stop()


@pytest.fixture
def api_spec(fake) -> CloudSpec:
    """Everything but the wait for SSH: for tests about the API alone (no sshd needed)."""
    return CloudSpec(
        token=TOKEN, droplet_name="stack-1", region="fra1", size="s-2vcpu-4gb",
        image="ubuntu-24-04-x64", tags=("stackdeploy",), ssh_public_key=KEY,
        ssh_key_name="stackdeploy-deploy", deploy_user="deploy", host_key=HOST_KEY, domain="app.example.test",
        subdomains=("flower", "admin"), firewall_enabled=True,
        operator_ip_url=fake.root_url + "/lab/my-ip", operator_ip_timeout=2.0,
        extra_ssh_cidrs=("203.0.113.0/24",), request_timeout=2.0, active_timeout=5.0,
        ssh_wait_timeout=0.0, max_retries=3, endpoint=fake.base_url,
        retry_base_delay=0.05, retry_max_total=10.0)


@pytest.fixture
def spec(api_spec, sshd) -> CloudSpec:
    return with_(api_spec, ssh_wait_timeout=5.0, ssh_port=sshd.port)


def with_(spec: CloudSpec, **changes) -> CloudSpec:
    return dataclasses.replace(spec, **changes)
