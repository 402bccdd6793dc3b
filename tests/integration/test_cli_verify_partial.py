"""US3 / SC-005: when the droplet cannot be reached, verify still writes a partial,
well-formed artifact set, warns, and says what was skipped and why."""

from lab.ports import free_port
from tests.integration.conftest import CANARIES, TOKEN, assert_no_secret_in


def _without(cli, *keys):
    lines = cli.env_file.read_text().splitlines()
    cli.env_file.write_text("\n".join(l for l in lines if not l.startswith(keys)) + "\n")


def test_no_token_and_no_ip_gives_a_partial_set(cli):
    _without(cli, "DIGITALOCEAN_TOKEN")
    res = cli.run("verify")
    out = res.stdout + res.stderr
    assert res.returncode == 4, out
    assert "WARNING" in out and "remote verification skipped" in out
    data = cli.manifest()
    assert data["outcome"] == "partial"
    assert data["skipped"][0]["what"] == "remote verification"
    assert "DROPLET_IP" in data["skipped"][0]["why"]
    folder = cli.runs()[-1]
    for name in ("run.json", "run.log", "summary.md", "local/settings.json", "local/environment.txt", "local/stack-env.txt"):
        assert (folder / name).is_file(), name
    assert "remote verification" in (folder / "summary.md").read_text()
    assert {s["name"]: s["status"] for s in data["steps"]}["collect"] == "skipped"


def test_rejected_token_in_verify_is_partial_not_a_crash(cli):
    cli.env_file.write_text(cli.env_file.read_text().replace(TOKEN, "dop_v1_" + "dead" * 16))
    res = cli.run("verify")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "rejected" in cli.manifest()["skipped"][0]["why"].lower() or "401" in cli.manifest()["skipped"][0]["why"]


def test_ssh_unreachable_skips_remote_collection_with_guidance(cli):
    port = free_port()  # nothing listens there: connection refused
    res = cli.run("verify", env_extra={"DROPLET_IP": "127.0.0.1", "SSH_PORT": str(port), "CHECK_RATE_LIMIT": "false",
                                        "CHECK_SAMPLES": "1", "CHECK_TIMEOUT": "2"})
    data = cli.manifest()
    skipped = {s["what"]: s["why"] for s in data["skipped"]}
    assert "remote collection" in skipped, data
    assert "SSH_KEY_PATH" in skipped["remote collection"] and str(port) in skipped["remote collection"]
    # The checks from here still ran (and failed: nothing serves HTTPS on this address).
    assert data["checks"], "the outside-in checks must still run without SSH"
    assert res.returncode != 0
    folder = cli.runs()[-1]
    assert any(p.name.startswith("headers") or p.suffix == ".json" for p in (folder / "http").iterdir())
    assert_no_secret_in(folder, [TOKEN, *CANARIES.values()])
