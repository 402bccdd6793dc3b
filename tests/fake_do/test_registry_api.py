"""The fake API's container registry (DOCR) endpoints, against DigitalOcean's published contract."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

import pytest
import requests

from lab.fake_do import FakeDigitalOcean
from lab.fake_do.registry import DOCR_SERVER, SERVER_ENV
from tests.fake_do.contract import contract_or_skip, off_spec

TOKEN = "dop_v1_registry_fake_token_0123456789abcdef"
LAB_SERVER = "10.77.0.252"


@pytest.fixture(scope="module")
def contract() -> Any:
    return contract_or_skip()


@pytest.fixture
def fake():
    api = FakeDigitalOcean(TOKEN, registry_server=LAB_SERVER)
    api.start()
    yield api
    api.stop()


def call(fake: FakeDigitalOcean, method: str, path: str, token: str = TOKEN, **kw) -> requests.Response:
    return requests.request(method, fake.base_url + path, headers={"Authorization": f"Bearer {token}"},
                            timeout=5, **kw)


def test_one_registry_per_account_from_create_to_delete_all_on_spec(fake, contract):
    assert call(fake, "GET", "registry").status_code == 404       # none yet
    created = call(fake, "POST", "registry", json={"name": "stackdeploy", "subscription_tier_slug": "basic",
                                                   "region": "ams3"})
    assert created.status_code == 201
    registry = created.json()["registry"]
    assert (registry["name"], registry["region"]) == ("stackdeploy", "ams3")
    assert registry["subscription"]["tier"]["slug"] == "basic"
    assert registry["subscription"]["tier"]["included_repositories"] == 5
    assert call(fake, "GET", "registry").json() == {"registry": registry}

    again = call(fake, "POST", "registry", json={"name": "other", "subscription_tier_slug": "starter"})
    assert again.status_code == 409 and "only one" in again.json()["message"]
    assert call(fake, "GET", "registry").json()["registry"]["name"] == "stackdeploy"

    assert call(fake, "DELETE", "registry").status_code == 204
    assert call(fake, "GET", "registry").status_code == 404
    default_region = call(fake, "POST", "registry", json={"name": "second", "subscription_tier_slug": "starter"})
    assert default_region.json()["registry"]["region"] in ("nyc3", "sfo3", "ams3", "sgp1", "fra1")
    assert call(fake, "GET", "registry", token="dop_v1_wrong").status_code == 401

    problems = off_spec(contract, fake.requests)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("body, why", [
    ({"name": "Upper", "subscription_tier_slug": "basic"}, "lowercase"),
    ({"name": "x" * 64, "subscription_tier_slug": "basic"}, "1-63"),
    ({"name": "ok"}, "subscription_tier_slug"),
    ({"name": "ok", "subscription_tier_slug": "gold"}, "subscription_tier_slug"),
    ({"name": "ok", "subscription_tier_slug": "basic", "region": "lon1"}, "region"),
])
def test_a_registry_the_api_would_refuse_is_refused_with_a_reason(fake, body, why):
    answer = call(fake, "POST", "registry", json=body)
    assert answer.status_code == 422
    assert why in answer.json()["message"]
    assert call(fake, "GET", "registry").status_code == 404      # nothing was made


def test_docker_credentials_name_the_lab_registry_and_carry_the_token_as_user_and_password(fake, contract):
    assert call(fake, "GET", "registry/docker-credentials").status_code == 404   # no registry yet
    call(fake, "POST", "registry", json={"name": "stackdeploy", "subscription_tier_slug": "basic"})
    answer = call(fake, "GET", "registry/docker-credentials", params={"read_write": "true", "expiry_seconds": 3600})
    assert answer.status_code == 200
    auths = answer.json()["auths"]
    assert list(auths) == [LAB_SERVER]
    assert base64.b64decode(auths[LAB_SERVER]["auth"]).decode() == f"{TOKEN}:{TOKEN}"
    bad = call(fake, "GET", "registry/docker-credentials", params={"expiry_seconds": "soon"})
    assert bad.status_code == 400 and "expiry_seconds" in bad.json()["message"]
    problems = off_spec(contract, [r for r in fake.requests if r.status != 400])
    assert not problems, "\n".join(problems)


def test_the_contract_check_notices_a_broken_registry_answer(fake, contract):
    def tier_as_text(method: str, path: str, status: int, payload: Any) -> Any:
        if path == "/v2/registry" and status in (200, 201):
            payload["registry"]["subscription"]["tier"]["included_repositories"] = "five"
        return payload

    fake.add_response_hook(tier_as_text)
    call(fake, "POST", "registry", json={"name": "stackdeploy", "subscription_tier_slug": "basic"})
    problems = off_spec(contract, fake.requests)
    assert problems and all("included_repositories" in p for p in problems), problems


def test_without_a_lab_address_the_credentials_name_docr(contract):
    with FakeDigitalOcean(TOKEN) as api:
        call(api, "POST", "registry", json={"name": "stackdeploy", "subscription_tier_slug": "basic"})
        assert list(call(api, "GET", "registry/docker-credentials").json()["auths"]) == [DOCR_SERVER]


def test_the_registry_survives_an_api_restart(tmp_path):
    state_file = str(tmp_path / "api-state.json")
    with FakeDigitalOcean(TOKEN, state_file=state_file, registry_server=LAB_SERVER) as api:
        call(api, "POST", "registry", json={"name": "kept", "subscription_tier_slug": "basic"})
    with FakeDigitalOcean(TOKEN, state_file=state_file, registry_server=LAB_SERVER) as api:
        assert call(api, "GET", "registry").json()["registry"]["name"] == "kept"
    assert TOKEN not in open(state_file).read()


@pytest.mark.parametrize("flag, variable", [(["--registry-server", "10.9.9.252"], "10.1.1.1"), ([], "10.9.9.252")])
def test_the_api_process_takes_the_registry_address_from_its_flag_else_its_environment(flag, variable):
    env = {**os.environ, "FAKE_DO_TOKEN": TOKEN, SERVER_ENV: variable}
    proc = subprocess.Popen([sys.executable, "-m", "lab.fake_do", "--port", "0", *flag], stdout=subprocess.PIPE,
                            env=env, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        base = proc.stdout.readline().strip()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        requests.post(base + "registry", json={"name": "p", "subscription_tier_slug": "basic"}, headers=headers,
                      timeout=5)
        creds = requests.get(base + "registry/docker-credentials", headers=headers, timeout=5).json()
        assert list(creds["auths"]) == ["10.9.9.252"]
        assert json.dumps(creds).count(base64.b64encode(f"{TOKEN}:{TOKEN}".encode()).decode()) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
