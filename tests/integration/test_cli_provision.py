"""`inv provision` end to end through the real python-digitalocean library (issue 2's done-when)."""
import time

from tests.integration.conftest import CANARIES, TOKEN, assert_no_secret_in


def test_provision_creates_then_changes_nothing(cli, fake):
    import requests

    # The zone must be managed in the account for DNS records to be ensured.
    requests.post(fake.base_url + "domains", json={"name": "example.test"},
                  headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).raise_for_status()

    first = cli.run("provision", "--no-wait")   # the API side alone: the sshd here is no droplet
    assert first.returncode == 0, first.stdout + first.stderr
    data = cli.manifest()
    assert data["outcome"] == "success"
    assert data["target"]["ip"] == "127.0.0.1"
    prov = data["details"]["provision"]
    assert prov["droplet"]["created"] is True
    assert prov["firewall"]["status"] == "created" and prov["firewall"]["operator_ip"] == "198.51.100.7"
    assert prov["dns"]["status"] == "managed"
    a_records = {r["name"]: r["data"] for r in fake.store.records("example.test", rtype="A")}
    assert a_records == {"app": "127.0.0.1", "flower.app": "127.0.0.1", "admin.app": "127.0.0.1"}

    fake.clear_requests()
    second = cli.run("provision", "--no-wait")
    assert second.returncode == 0, second.stdout + second.stderr
    writes = [f"{r.method} {r.path}" for r in fake.requests if r.is_write]
    assert writes == [], f"a second provision must change nothing, but sent {writes}"
    again = cli.manifest()["details"]["provision"]
    assert again["droplet"]["created"] is False and again["firewall"]["status"] == "unchanged"
    for folder in cli.runs():
        assert_no_secret_in(folder, [TOKEN, *CANARIES.values()])


def test_missing_token_fails_fast_with_a_run_folder(cli):
    text = cli.env_file.read_text().splitlines()
    cli.env_file.write_text("\n".join(l for l in text if not l.startswith("DIGITALOCEAN_TOKEN")) + "\n")
    t0 = time.monotonic()
    res = cli.run("deploy")
    assert time.monotonic() - t0 < 5
    assert res.returncode == 2
    assert "DIGITALOCEAN_TOKEN is not set" in res.stdout + res.stderr
    data = cli.manifest()
    assert data["outcome"] == "config-error" and "DIGITALOCEAN_TOKEN" in data["error"]
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["token-check"]["status"] == "failed" and "DIGITALOCEAN_TOKEN" in steps["token-check"]["message"]


def test_rejected_token_fails_fast_and_is_never_written(cli, fake):
    bad = "dop_v1_" + "0bad" * 16
    text = cli.env_file.read_text().replace(TOKEN, bad)
    cli.env_file.write_text(text)
    t0 = time.monotonic()
    res = cli.run("deploy")
    assert time.monotonic() - t0 < 5
    assert res.returncode == 3, res.stdout + res.stderr
    data = cli.manifest()
    assert data["outcome"] == "config-error"
    assert "token" in data["error"].lower()
    assert bad not in res.stdout + res.stderr
    assert_no_secret_in(cli.runs()[-1], [bad, *CANARIES.values()])
    assert not any(r.method == "POST" and "droplets" in r.path for r in fake.requests)
