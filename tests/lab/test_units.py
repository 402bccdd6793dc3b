"""Pure parts of the lab: settings validation, firewall rule translation, lab env values."""
from __future__ import annotations

from pathlib import Path

import pytest

from deploy.redact import SecretRegistry
from deploy.settings import load_settings, missing_stack_keys
from lab import config as labconfig
from lab import stackenv
from lab.droplets import firewall
from lab.errors import LabError
from lab.images import recipes

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env,needle", [
    ({"LAB_SUBNET": "10.77.0.300/24"}, "LAB_SUBNET"),
    ({"LAB_SUBNET": "10.77.0.5/24"}, "LAB_SUBNET"),
    ({"LAB_API_PORT": "http"}, "LAB_API_PORT"),
    ({"LAB_IMAGES": "hub"}, "LAB_IMAGES"),
    ({"LAB_NAME": "lab_1!"}, "LAB_NAME"),
    ({"LAB_VPC_SUBNET": "10.177.0.0/33"}, "LAB_VPC_SUBNET"),
    ({"LAB_VPC_SUBNET": "10.77.0.0/16"}, "LAB_VPC_SUBNET"),          # overlaps the default subnet
])
def test_bad_settings_name_the_variable_and_the_fix(env, needle):
    with pytest.raises(LabError) as err:
        labconfig.load({}, environ=env)
    assert needle in str(err.value) and "invoke.yaml" in str(err.value)


def test_settings_precedence_yaml_then_environment():
    cfg = labconfig.load({"subnet": "10.90.0.0/24", "api_port": 9000}, environ={"LAB_API_PORT": "9001"})
    assert (cfg.subnet, cfg.api_port, cfg.gateway) == ("10.90.0.0/24", 9001, "10.90.0.1")
    assert labconfig.load({}, environ=cfg.to_env()) == cfg


@pytest.mark.parametrize("subnet,vpc", [("10.77.0.0/24", "10.177.0.0/24"), ("10.200.4.0/24", "10.44.4.0/24"),
                                        ("192.168.5.0/28", "10.12.5.0/28")])
def test_each_lab_subnet_has_its_own_private_vpc(subnet, vpc):
    """Labs run side by side (CI, a benchmark): their VPCs must not collide, and must be private."""
    cfg = labconfig.load({"subnet": subnet}, environ={})
    assert cfg.vpc == vpc and cfg.vpc_network == "stackdeploy-lab-vpc"
    assert labconfig.load({}, environ={**cfg.to_env(), "LAB_VPC_SUBNET": "10.99.0.0/24"}).vpc == "10.99.0.0/24"


def test_the_firewall_also_guards_the_vpc_interface():
    """A DigitalOcean Cloud Firewall filters private (VPC) traffic as well as public."""
    script = firewall.script([{"protocol": "tcp", "ports": "22", "sources": {"addresses": ["10.0.0.1"]}}])
    assert "-I PREROUTING 1 -i eth0 -j LAB-FW" in script and "-I PREROUTING 1 -i eth1 -j LAB-FW" in script


def test_firewall_rules_allow_listed_sources_then_drop():
    rules = [{"protocol": "tcp", "ports": "22", "sources": {"addresses": ["198.51.100.7", "::/0"]}},
             {"protocol": "tcp", "ports": "8000-8010", "sources": {"droplet_ids": [5]}},
             {"protocol": "icmp", "sources": {"addresses": ["0.0.0.0/0"]}}]
    lines = firewall.rule_lines(rules, {5: "10.77.0.9"})
    assert lines[0][-3:] == ["ESTABLISHED,RELATED", "-j", "RETURN"]
    assert ["-A", "LAB-FW", "-p", "tcp", "-s", "198.51.100.7/32", "--dport", "22", "-j", "RETURN"] in lines
    assert ["-A", "LAB-FW", "-p", "tcp", "-s", "10.77.0.9/32", "--dport", "8000:8010", "-j", "RETURN"] in lines
    assert ["-A", "LAB-FW", "-p", "icmp", "-s", "0.0.0.0/0", "-j", "RETURN"] in lines
    assert lines[-1] == ["-A", "LAB-FW", "-j", "DROP"]
    assert not any("::/0" in " ".join(line) for line in lines)   # IPv4-only lab network


def test_a_tag_source_admits_every_address_of_the_droplets_carrying_the_tag_only():
    swarm = {"tags": ["stack-swarm"]}
    rules = [{"protocol": "tcp", "ports": "22", "sources": {"addresses": ["198.51.100.7/32"]}},
             {"protocol": "tcp", "ports": "2377", "sources": swarm},
             {"protocol": "udp", "ports": "4789", "sources": swarm},
             {"protocol": "tcp", "ports": "7946", "sources": {**swarm, "droplet_ids": [6]}}]
    ips = {5: ["10.77.0.5", "10.177.0.2"], 6: "10.77.0.6", 7: ["10.77.0.7"]}   # 7: not in the swarm
    # 8 carries the tag but has no machine yet: nothing to admit until the rules are applied again
    lines = firewall.rule_lines(rules, ips, {"stack-swarm": [5, 6, 8]})
    admitted = {(line[3], line[5], line[7] if "--dport" in line else None) for line in lines if "-s" in line}
    swarm_sources = {"10.77.0.5/32", "10.177.0.2/32", "10.77.0.6/32"}
    assert admitted == ({("tcp", "198.51.100.7/32", "22")}
                        | {("tcp", s, "2377") for s in swarm_sources} | {("udp", s, "4789") for s in swarm_sources}
                        | {("tcp", s, "7946") for s in swarm_sources})   # 6 by id and by tag: one line
    assert len([line for line in lines if "7946" in line]) == 3
    assert lines[-1] == ["-A", "LAB-FW", "-j", "DROP"]


def test_a_tag_nobody_carries_admits_nobody():
    rules = [{"protocol": "tcp", "ports": "2377", "sources": {"tags": ["stack-swarm"]}}]
    for tagged in (None, {"stack-swarm": []}):
        lines = firewall.rule_lines(rules, {5: "10.77.0.5"}, tagged)
        assert not any("2377" in line for line in lines) and lines[-1][-1] == "DROP"
    assert "-s 10.77.0.5/32 --dport 2377" in firewall.script(rules, {5: "10.77.0.5"}, {"stack-swarm": [5]})


def test_no_rules_means_an_open_droplet_but_the_chain_is_still_reset():
    assert firewall.rule_lines([]) == []
    script = firewall.script([])
    assert "-F LAB-FW" in script and "DROP" not in script


def test_recipe_digest_follows_its_content():
    base = recipes.REDIS.digest("b1")
    assert base == recipes.REDIS.digest("b1")
    assert base != recipes.REDIS.digest("b2")                      # new base -> rebuild
    changed = recipes.Recipe(**{**recipes.REDIS.__dict__, "packages": ("redis-server",)})
    assert changed.digest("b1") != base


def test_lab_env_generates_secrets_once_and_keeps_the_rest():
    example = stackenv.parse_example(
        "# c\nDOMAIN=example.com\nPOSTGRES_PASSWORD=change-me-pw\nPOSTGRES_DB=app\n"
        "FLOWER_BASIC_AUTH='admin:$apr1$examples$x'\nDASHBOARD_ALLOWLIST=203.0.113.10/32\n")
    first = stackenv.lab_values(example, "app.lab.test", "10.77.0.1", {}, "pw")
    assert first["DOMAIN"] == "app.lab.test" and first["POSTGRES_DB"] == "app"
    assert first["POSTGRES_PASSWORD"] != "change-me-pw" and len(first["POSTGRES_PASSWORD"]) >= 32
    assert first["DASHBOARD_ALLOWLIST"] == "10.77.0.1/32"
    assert stackenv.htpasswd_matches(first["FLOWER_BASIC_AUTH"], "admin", "pw")
    assert first["FLOWER_BASIC_AUTH"].startswith("admin:$2b$")  # bcrypt, as Settings requires
    kept = stackenv.parse_example(stackenv.format_env(first))
    assert kept == first                                         # round-trips through the file
    again = stackenv.lab_values(example, "app.lab.test", "10.77.0.1", kept, "pw")
    assert again == first                                        # same password, same lines
    old_lab = {**kept, "FLOWER_BASIC_AUTH": "admin:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}
    upgraded = stackenv.lab_values(example, "app.lab.test", "10.77.0.1", old_lab, "pw")
    assert stackenv.htpasswd_matches(upgraded["FLOWER_BASIC_AUTH"], "admin", "pw")


def test_lab_env_leaves_the_key_fallbacks_for_the_deployer_to_fill():
    # A generated value would be taken as the operator's own fallbacks, and a rotated
    # DJANGO_SECRET_KEY would lose its real fallback (the e2e rotation found it).
    example = stackenv.parse_example((REPO / "stack" / ".env.example").read_text())
    values = stackenv.lab_values(example, "app.lab.test", "10.77.0.1", {}, "pw")
    assert values["DJANGO_SECRET_KEY_FALLBACKS"] == "" and len(values["DJANGO_SECRET_KEY"]) >= 32
    kept = {**values, "DJANGO_SECRET_KEY_FALLBACKS": "generated-by-an-older-lab-0123456789abcdef"}
    assert stackenv.lab_values(example, "app.lab.test", "10.77.0.1", kept, "pw")["DJANGO_SECRET_KEY_FALLBACKS"] == ""


def test_lab_env_values_pass_the_deployers_secret_checks(tmp_path):
    # `inv lab.env` output is what scripts/demo.sh and the e2e tests deploy with.
    example_text = (REPO / "stack" / ".env.example").read_text()
    values = stackenv.lab_values(stackenv.parse_example(example_text), "app.lab.test", "10.77.0.1", {},
                                 "dashboard-pw-Zq81")
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / ".env.example").write_text(example_text)
    (tmp_path / "stack" / "compose.yml").write_text((REPO / "stack" / "compose.yml").read_text())
    env = tmp_path / "lab.env"
    env.write_text(stackenv.format_env(values))
    s = load_settings({"stack": {"dir": "stack"}}, env_file=env, environ={}, registry=SecretRegistry(), base_dir=tmp_path)
    assert missing_stack_keys(s) == []


def test_a_droplet_trusts_the_lab_registrys_ca_for_that_registry_only():
    from lab.droplets import seed
    files = seed.files(7, "node-1", ["ssh-ed25519 AAAA x"], "#cloud-config\n", ["10.0.0.53"], "/lab-7",
                       registry_cas={"10.75.0.252": b"-----BEGIN CERTIFICATE-----\n"})
    assert files["etc/docker/certs.d/10.75.0.252/ca.crt"] == (b"-----BEGIN CERTIFICATE-----\n", 0o644)
    assert not [p for p in seed.files(7, "n", [], None, [], "/x") if p.startswith("etc/docker/certs.d")]
