"""deploy/cloud/registry.py against the fake API: the account's container registry and its Docker login."""
from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from deploy.cloud import registry
from deploy.cloud import CloudError, CloudUnavailable, TokenRejected
from deploy.redact import MASK, Secret, SecretRegistry, redact
from lab.fake_do import FakeDigitalOcean
from tests.cloud.conftest import TOKEN, with_
from tests.fake_do.contract import contract_or_skip, off_spec

LAB_SERVER = "10.77.0.252"


@pytest.fixture(scope="module")
def contract() -> Any:
    return contract_or_skip()


def posts(fake: FakeDigitalOcean) -> list:
    return [r for r in fake.requests if r.method == "POST" and r.path == "/v2/registry"]


def test_the_registry_is_created_once_in_the_droplets_region_then_found(fake, api_spec, contract):
    first = registry.ensure_registry(api_spec, "stackdeploy")
    again = registry.ensure_registry(api_spec, "stackdeploy")
    assert first == registry.RegistryInfo(name="stackdeploy", region="fra1", tier="basic", created=True)
    assert again == registry.RegistryInfo(name="stackdeploy", region="fra1", tier="basic", created=False)
    assert len(posts(fake)) == 1
    assert registry.get_registry(api_spec) == again
    problems = off_spec(contract, fake.requests)
    assert not problems, "\n".join(problems)


def test_a_droplet_region_without_docr_lets_digitalocean_choose(fake, api_spec):
    made = registry.ensure_registry(with_(api_spec, region="lon1"), "stackdeploy", tier="starter")
    assert "region" not in posts(fake)[0].body
    assert made.region in registry.REGIONS and made.tier == "starter"


def test_an_account_registry_of_another_name_is_an_error_that_names_it(fake, api_spec):
    registry.ensure_registry(api_spec, "first-name")
    with pytest.raises(CloudError) as caught:
        registry.ensure_registry(api_spec, "second-name")
    assert "'first-name'" in str(caught.value) and "'second-name'" in str(caught.value)
    assert "first-name" in caught.value.hint
    assert len(posts(fake)) == 1


@pytest.mark.parametrize("name", ["Stack", "stack_deploy", "", "x" * 64])
def test_an_invalid_name_is_refused_before_any_request(fake, api_spec, name):
    with pytest.raises(CloudError, match="not valid"):
        registry.ensure_registry(api_spec, name)
    assert fake.requests == []


def test_a_lost_answer_to_the_create_is_not_a_second_create(fake, api_spec):
    fake.inject("POST", r"^/v2/registry$", 503, process=True)   # created, but the answer is a 503
    made = registry.ensure_registry(api_spec, "stackdeploy")
    assert made.created and made.name == "stackdeploy"
    assert len(posts(fake)) == 1


def test_a_registry_created_meanwhile_by_another_deploy_is_used(fake, api_spec):
    registry.ensure_registry(api_spec, "stackdeploy")
    fake.clear_requests()
    fake.inject("GET", r"^/v2/registry$", 404, times=1)   # our read came before theirs was made
    found = registry.ensure_registry(api_spec, "stackdeploy")
    assert found.name == "stackdeploy" and not found.created
    assert [r.status for r in posts(fake)] == [409]


def test_rate_limits_and_outages_are_retried_within_the_budget(fake, api_spec, caplog):
    fake.inject("GET", r"^/v2/registry$", 429, times=1, retry_after=0)
    fake.inject("POST", r"^/v2/registry$", 503, times=1)
    with caplog.at_level(logging.WARNING):
        assert registry.ensure_registry(api_spec, "stackdeploy").created
    assert "retry 1/3" in caplog.text
    fake.inject("GET", r"^/v2/registry$", 503, times=-1)
    with pytest.raises(CloudUnavailable, match="kept failing while reading the container registry"):
        registry.get_registry(api_spec)


def test_a_rejected_token_is_a_token_error_without_the_token(fake, api_spec):
    with pytest.raises(TokenRejected) as caught:
        registry.ensure_registry(with_(api_spec, token="dop_v1_revoked_0123456789abcdef"), "stackdeploy")
    text = f"{caught.value} {caught.value.hint}"
    assert "401" in text and "revoked_0123456789abcdef" not in text


def test_docker_credentials_are_a_registered_secret_for_the_registry_server(fake, api_spec, contract):
    registry.ensure_registry(api_spec, "stackdeploy")
    secrets = SecretRegistry()
    login = registry.docker_credentials(api_spec, expiry_seconds=3600, registry=secrets)
    assert login.server == "registry.digitalocean.com"
    assert isinstance(login.auth, Secret)
    assert base64.b64decode(login.auth.reveal()).decode() == f"{TOKEN}:{TOKEN}"
    sent = fake.requests[-1]
    assert sent.query == {"read_write": ["true"], "expiry_seconds": ["3600"]}
    # Printed, logged or written into an artifact, neither the auth nor the user and password
    # inside it show (the fresh registry knew none of them before the call).
    assert login.auth.reveal() not in f"{login} {login!r}"
    line = f"docker said {login.auth.reveal()} for {TOKEN} at {login.server}"
    assert redact(line, secrets) == f"docker said {MASK} for {MASK} at registry.digitalocean.com"
    problems = off_spec(contract, fake.requests)
    assert not problems, "\n".join(problems)


def test_read_only_credentials_are_asked_as_such_and_never_expire(fake, api_spec):
    """What a swarm keeps for its pulls: it pulls again whenever a task is rescheduled."""
    registry.ensure_registry(api_spec, "stackdeploy")
    registry.docker_credentials(api_spec, registry=SecretRegistry(), read_write=False)
    assert fake.requests[-1].query == {"read_write": ["false"]}


def test_the_lab_api_hands_out_a_login_for_the_lab_registry(api_spec):
    with FakeDigitalOcean(TOKEN, registry_server=LAB_SERVER) as lab_api:
        spec = with_(api_spec, endpoint=lab_api.base_url)
        registry.ensure_registry(spec, "stackdeploy")
        login = registry.docker_credentials(spec, registry=SecretRegistry())
    assert login.server == LAB_SERVER
    assert registry.image_ref(login.server, "stackdeploy", "app/web", "r42") == f"{LAB_SERVER}/stackdeploy/app/web:r42"


def test_credentials_without_a_registry_say_to_create_it(fake, api_spec):
    with pytest.raises(CloudError, match="no container registry") as caught:
        registry.docker_credentials(api_spec, registry=SecretRegistry())
    assert "create it first" in caught.value.hint


def test_an_answer_without_one_login_is_an_error_not_a_crash(fake, api_spec):
    registry.ensure_registry(api_spec, "stackdeploy")
    fake.add_response_hook(lambda m, p, s, payload: {"auths": {}} if p.endswith("docker-credentials") else payload)
    with pytest.raises(CloudError, match="without one registry login"):
        registry.docker_credentials(api_spec, registry=SecretRegistry())


def test_image_refs_look_like_docr_and_bad_parts_are_refused():
    assert registry.image_ref("registry.digitalocean.com", "acme", "web", "1.2.0-rc1") == \
        "registry.digitalocean.com/acme/web:1.2.0-rc1"
    assert registry.image_ref("10.77.0.252:5000", "acme", "stack/worker", "r_7") == "10.77.0.252:5000/acme/stack/worker:r_7"
    for args, word in [(("", "acme", "web", "1"), "server"), (("h/x", "acme", "web", "1"), "server"),
                       (("h", "Acme", "web", "1"), "registry name"), (("h", "acme", "Web", "1"), "repository"),
                       (("h", "acme", "web/", "1"), "repository"), (("h", "acme", "web", "-1"), "tag"),
                       (("h", "acme", "web", "a" * 129), "tag")]:
        with pytest.raises(ValueError, match=word):
            registry.image_ref(*args)


def test_a_login_holds_only_a_secret():
    with pytest.raises(TypeError):
        registry.RegistryLogin(server="h", auth="plain")   # type: ignore[arg-type]
