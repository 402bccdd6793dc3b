"""The registry command builders, as the strings a node runs (tests/lab/test_registry.py runs them)."""
from __future__ import annotations

import json
import shlex

import pytest

from remote import registry_cmds as rc

AUTH = "ZG9wX3YxX3NlY3JldDpkb3BfdjFfc2VjcmV0"   # base64("dop_v1_secret:dop_v1_secret")
DIR = "/opt/stackdeploy/.docker"


def test_the_config_logs_in_to_exactly_the_server():
    assert json.loads(rc.docker_config("registry.digitalocean.com", AUTH)) == \
        {"auths": {"registry.digitalocean.com": {"auth": AUTH}}}


def test_login_moves_the_staged_file_into_a_private_folder_and_never_names_the_secret():
    staged = rc.staged_path(DIR)
    assert staged.startswith("/opt/stackdeploy/.registry-login-") and staged != rc.staged_path(DIR)
    command = rc.login_command(DIR, staged)
    assert command == (f"trap 'rm -f {staged}' EXIT; mkdir -p {DIR} && chmod 700 {DIR} && chmod 600 {staged} && "
                       f"mv -f {staged} {DIR}/config.json")
    assert "docker login" not in command and "--username" not in command


def test_push_pull_and_logout_use_the_deploy_config_and_tag_does_not_need_it():
    ref = "registry.digitalocean.com/acme/web:r42"
    assert rc.tag_command("stack-web:latest", ref) == f"docker tag stack-web:latest {ref}"
    assert rc.push_command(DIR, ref) == f"docker --config {DIR} push --quiet {ref}"
    assert rc.pull_command(DIR, ref) == f"docker --config {DIR} pull --quiet {ref}"
    assert rc.logout_command(DIR, "registry.digitalocean.com") == f"docker --config {DIR} logout registry.digitalocean.com"


def test_odd_names_are_quoted_not_interpreted():
    odd = "/srv/my deploy/$(id)/.docker"
    assert shlex.split(rc.push_command(odd, "h/a/b:1"))[:3] == ["docker", "--config", odd]
    assert shlex.split(rc.login_command(odd, "/srv/my deploy/x;y"))[-2:] == ["/srv/my deploy/x;y", f"{odd}/config.json"]


@pytest.mark.parametrize("bad", ["relative/.docker", "~/.docker", "/opt/a\n/b"])
def test_the_config_folder_must_be_an_absolute_path(bad):
    with pytest.raises(ValueError, match="absolute path"):
        rc.push_command(bad, "h/a/b:1")
