"""`inv destroy` end to end: the real command line, python-digitalocean and the fake API."""
from __future__ import annotations

import requests

from tests.integration.conftest import CANARIES, TOKEN, assert_no_secret_in


def test_destroy_refuses_without_a_terminal_then_removes_with_yes_then_finds_nothing(cli, fake):
    requests.post(fake.base_url + "domains", json={"name": "example.test"},
                  headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).raise_for_status()
    assert cli.run("provision", "--no-wait").returncode == 0
    made = fake.state

    refused = cli.run("destroy")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "remove  droplet   stackdeploy-1" in refused.stdout            # listed before refusing
    assert "nothing was removed: there is no terminal" in refused.stdout + refused.stderr
    assert fake.state["droplets"] == made["droplets"] and fake.state["firewalls"] == made["firewalls"]

    done = cli.run("destroy", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    state = fake.state
    assert not state["droplets"] and not state["firewalls"] and not state["ssh_keys"]
    assert [r for r in state["records"]["example.test"] if r["type"] == "A"] == []
    assert cli.manifest()["outcome"] == "success"

    again = cli.run("destroy")
    assert again.returncode == 0 and "nothing of stack stackdeploy-1 is left" in again.stdout
    for folder in cli.runs():
        assert_no_secret_in(folder, [TOKEN, *CANARIES.values()])
