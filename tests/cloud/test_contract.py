"""A whole provision, checked exchange by exchange against DigitalOcean's published contract.

Every request the adapter sends to the fake API and every answer the fake gives must
validate against shared/specs/digitalocean-public.v2.yaml; the checks below also prove
that the validation notices a broken answer or request, so a pass means something.
"""
from __future__ import annotations

import re
from typing import Any

import pytest

from deploy import cloud
from deploy.cloud import CloudError
from tests.cloud.conftest import with_
from lab.fake_do.faults import RequestRecord
from tests.fake_do.contract import contract_or_skip, off_spec


@pytest.fixture(scope="module")
def contract() -> Any:
    return contract_or_skip()


def operation(record: RequestRecord) -> str:
    """'METHOD /v2/path' with ids, fingerprints and the zone as placeholders."""
    path = re.sub(r"/[0-9a-f]{8}-[0-9a-f-]{27}", "/{id}", record.path)
    path = re.sub(r"/([0-9a-f]{2}:){15}[0-9a-f]{2}|/\d+", "/{id}", path)
    path = re.sub(r"/tags/[^/]+", "/tags/{tag}", path)
    return f"{record.method} {path.replace('/example.test', '/{zone}')}"


def test_a_full_provision_is_on_spec(fake, api_spec, contract):
    fake.store.create_domain({"name": "example.test"})
    fake.store.create_record("example.test", {"type": "A", "name": "app", "data": "192.0.2.99"})
    with pytest.raises(CloudError):  # a 401 and its error body are part of the contract too
        cloud.check_token(with_(api_spec, token="dop_v1_revoked"))
    fake.inject("GET", r"^/v2/account$", 429, times=1, retry_after=0)
    fake.inject("GET", r"^/v2/droplets$", 503, times=1)

    first = cloud.provision(api_spec)      # key, droplet, firewall, A records created/fixed
    fake.operator_ip = "192.0.2.44"
    cloud.provision(api_spec)              # the firewall is rewritten (PUT)
    fw_id = next(iter(fake.state["firewalls"]))
    fake.store.firewall_droplets(fw_id, [first.droplet.id], add=False)
    cloud.provision(api_spec)              # and re-attached
    assert cloud.find_droplet(api_spec).id == first.droplet.id

    seen = {operation(r) for r in fake.requests}
    assert seen >= {
        "GET /v2/account", "GET /v2/account/keys/{id}", "POST /v2/account/keys",
        "GET /v2/droplets", "POST /v2/droplets", "GET /v2/droplets/{id}",
        "GET /v2/firewalls", "POST /v2/firewalls", "PUT /v2/firewalls/{id}",
        "POST /v2/firewalls/{id}/droplets", "GET /v2/domains", "GET /v2/domains/{zone}/records",
        "POST /v2/domains/{zone}/records", "PUT /v2/domains/{zone}/records/{id}",
        "POST /v2/tags", "POST /v2/tags/{tag}/resources", "DELETE /v2/tags/{tag}"}   # operators announced
    assert {401, 404, 429, 503} <= {r.status for r in fake.requests}
    problems = off_spec(contract, fake.requests)
    assert not problems, f"{len(problems)} off-spec:\n" + "\n".join(problems)


def _corrupt_size_transfer(method: str, path: str, status: int, payload: Any) -> Any:
    if method == "GET" and re.fullmatch(r"/v2/droplets/\d+", path) and status == 200:
        payload["droplet"]["size"]["transfer"] = "4 TB"
    return payload


def _drop_region_features(method: str, path: str, status: int, payload: Any) -> Any:
    if method == "GET" and path == "/v2/droplets" and status == 200:
        for droplet in payload["droplets"]:
            del droplet["region"]["features"]
    return payload


def _halve_memory(method: str, path: str, status: int, payload: Any) -> Any:
    if method == "GET" and re.fullmatch(r"/v2/droplets/\d+", path) and status == 200:
        payload["droplet"]["memory"] //= 2
    return payload


def _forget_ipv6(method: str, path: str, status: int, payload: Any) -> Any:
    # Our droplets are made without IPv6, so the broken answer claims the feature itself.
    if method == "GET" and path == "/v2/droplets" and status == 200:
        for droplet in payload["droplets"]:
            droplet["features"] = sorted(set(droplet["features"]) | {"ipv6"})
            droplet["networks"]["v6"] = []
    return payload


@pytest.mark.parametrize("hook, problem", [
    (_corrupt_size_transfer, "GET /v2/droplets/{id} -> 200: response: droplet/size/transfer: "
                             "'4 TB' is not of type 'number'"),
    (_drop_region_features, "GET /v2/droplets -> 200: response: droplets/0/region: "
                            "'features' is a required property"),
    (_halve_memory, "GET /v2/droplets/{id} -> 200: response: droplet {id}: memory 2048 is not "
                    "its size's 4096"),
    (_forget_ipv6, "GET /v2/droplets -> 200: response: droplet {id}: has the ipv6 feature and "
                   "a public IPv4 but no public IPv6"),
], ids=["wrong-type", "missing-required-field", "memory-not-the-size's", "ipv6-not-listed"])
def test_a_broken_answer_is_caught(fake, api_spec, contract, hook, problem):
    fake.add_response_hook(hook)
    made = cloud.provision(api_spec)  # polls the new droplet: GET /v2/droplets/{id}
    cloud.provision(api_spec)         # finds it: GET /v2/droplets
    # the adapter does not read the broken fields: only the contract check notices
    problems = off_spec(contract, fake.requests)
    assert problems and set(problems) == {problem.replace("{id}", str(made.droplet.id))}


def test_an_off_spec_request_is_caught(fake, api_spec, contract):
    with pytest.raises(CloudError, match="HTTP 422"):
        cloud.provision(with_(api_spec, droplet_name="bad_name!"))
    [problem] = off_spec(contract, fake.requests)  # the refusal itself is on spec
    assert problem.startswith("POST /v2/droplets -> 422: request: name: 'bad_name!' does not match")
