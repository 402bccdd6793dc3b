"""The leader's side of a swarm release, as strings and values: registry refs, the deploy command."""
from __future__ import annotations

import pytest

from deploy.cloud.registry import image_ref
from remote import swarm_release


def test_each_service_image_keeps_its_repository_and_release_tag_under_the_registry():
    local = {"api": "stackdeploy-api:20261127T0300Z-ab", "django": "stackdeploy-django:20261127T0200Z-cd",
             "worker": "stackdeploy-django:20261127T0200Z-cd"}
    refs = swarm_release.registry_refs(local, lambda repo, tag: image_ref("registry.digitalocean.com", "acme", repo, tag))
    assert refs == {"api": "registry.digitalocean.com/acme/stackdeploy-api:20261127T0300Z-ab",
                    "django": "registry.digitalocean.com/acme/stackdeploy-django:20261127T0200Z-cd",
                    "worker": "registry.digitalocean.com/acme/stackdeploy-django:20261127T0200Z-cd"}


def test_an_untagged_image_is_refused_with_the_service_named():
    with pytest.raises(ValueError, match="api"):
        swarm_release.registry_refs({"api": "localhost:5000/api"}, lambda r, t: f"{r}:{t}")


def test_the_stack_deploy_hands_the_deploys_own_login_to_the_nodes_and_prunes():
    cmd = swarm_release.deploy_command("/opt/stackdeploy/.docker", "/opt/stackdeploy/releases/r1/stack.yml", "stackdeploy")
    assert cmd == ("docker --config /opt/stackdeploy/.docker stack deploy --with-registry-auth --prune "
                   "-c /opt/stackdeploy/releases/r1/stack.yml stackdeploy")
