"""The fake API's block storage volumes and snapshots, against DigitalOcean's published contract."""
from __future__ import annotations

from typing import Any

import pytest
import requests

from lab.fake_do import FakeDigitalOcean
from tests.fake_do.contract import contract_or_skip, off_spec

TOKEN = "dop_v1_storage_fake_token_0123456789abcdef"


@pytest.fixture(scope="module")
def contract() -> Any:
    return contract_or_skip()


@pytest.fixture
def fake():
    api = FakeDigitalOcean(TOKEN, max_per_page=1)    # one per page: the lists are paged
    api.start()
    yield api
    api.stop()


def call(fake: FakeDigitalOcean, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, fake.base_url + path, headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=5, **kw)


def droplet(fake: FakeDigitalOcean, name: str) -> int:
    made = call(fake, "POST", "droplets", json={"name": name, "region": "fra1", "size": "s-1vcpu-1gb",
                                                "image": "ubuntu-24-04-x64"})
    fake.wait_droplets_settled()
    return made.json()["droplet"]["id"]


def test_volumes_are_listed_paged_detached_with_their_droplet_and_deleted_on_spec(fake, contract):
    web = droplet(fake, "web")
    attached = fake.storage.create_volume({"name": "pgdata", "size_gigabytes": 10, "region": "fra1",
                                           "droplet_ids": [web], "tags": ["web-swarm"]})
    loose = fake.storage.create_volume({"name": "scratch", "size_gigabytes": 1, "region": "ams3"})
    first = call(fake, "GET", "volumes").json()
    assert [v["name"] for v in first["volumes"]] == ["pgdata"] and first["links"]["pages"]["next"]
    assert call(fake, "GET", "volumes", params={"region": "ams3"}).json()["volumes"][0]["id"] == loose["id"]
    assert call(fake, "GET", f"volumes/{attached['id']}").json()["volume"]["droplet_ids"] == [web]

    refused = call(fake, "DELETE", f"volumes/{attached['id']}")
    assert refused.status_code == 409                      # attached: DigitalOcean refuses too
    assert call(fake, "DELETE", f"droplets/{web}").status_code == 204
    assert call(fake, "GET", f"volumes/{attached['id']}").json()["volume"]["droplet_ids"] == []
    assert call(fake, "DELETE", f"volumes/{attached['id']}").status_code == 204
    assert call(fake, "GET", f"volumes/{attached['id']}").status_code == 404
    assert [v["name"] for v in fake.state["volumes"].values()] == ["scratch"]

    problems = off_spec(contract, fake.requests)
    assert not problems, "\n".join(problems)


def test_snapshots_are_listed_by_resource_type_and_deleted_on_spec(fake, contract):
    of_droplet = fake.storage.create_snapshot({"resource_type": "droplet", "resource_id": 4242, "name": "web-before",
                                               "tags": ["web-swarm"]})
    of_volume = fake.storage.create_snapshot({"resource_type": "volume", "resource_id": "abc", "name": "pg-1"})
    assert call(fake, "GET", "snapshots", params={"resource_type": "volume"}).json()["snapshots"] == [of_volume]
    assert call(fake, "GET", f"snapshots/{of_droplet['id']}").json()["snapshot"]["resource_id"] == "4242"
    assert call(fake, "DELETE", f"snapshots/{of_droplet['id']}").status_code == 204
    assert call(fake, "DELETE", f"snapshots/{of_droplet['id']}").status_code == 404
    assert call(fake, "GET", "snapshots").json()["snapshots"] == [of_volume]

    problems = off_spec(contract, fake.requests)
    assert not problems, "\n".join(problems)


def test_deleting_a_tag_untags_volumes_and_snapshots(fake):
    fake.storage.create_volume({"name": "pgdata", "size_gigabytes": 10, "region": "fra1", "tags": ["t"]})
    fake.storage.create_snapshot({"resource_type": "droplet", "resource_id": 1, "name": "s", "tags": ["t"]})
    assert call(fake, "DELETE", "tags/t").status_code == 204
    state = fake.state
    assert [v["tags"] for v in state["volumes"].values()] == [[]]
    assert [s["tags"] for s in state["snapshots"].values()] == [[]]
