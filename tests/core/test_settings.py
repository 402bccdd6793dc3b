"""Settings: env file parsing (FR-003), precedence, validation errors that name key and fix."""
from pathlib import Path

import pytest

from deploy.errors import ConfigError
from deploy.redact import Secret, SecretRegistry, redact
from deploy.settings import load_settings, missing_stack_keys

CONFIG = {
    "project": "demo", "deploy_env": "production", "subdomains": ["flower", "admin"],
    "droplet": {"name": "d1", "region": "fra1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64", "tags": ["demo"]},
    "ssh": {"user": "deploy", "key_path": "~/.ssh/id_ed25519", "port": 22, "known_hosts": "/tmp/kh", "connect_timeout": 5, "retries": 2},
    "logs": {"dir": "local_run_logs", "timestamp": True},
    "stack": {"dir": "stack"},
}


def load(tmp_path: Path, env_text: str | None = None, environ=None, flags=None, example: str | None = None):
    stack = tmp_path / "stack"
    stack.mkdir(exist_ok=True)
    if example is not None:
        (stack / ".env.example").write_text(example)
    env_file = None
    if env_text is not None:
        env_file = tmp_path / "my.env"
        env_file.write_text(env_text)
    return load_settings(CONFIG, env_file=env_file, environ=environ or {}, flags=flags,
                         registry=SecretRegistry(), base_dir=tmp_path)


def test_env_file_syntax(tmp_path):
    text = (
        "# a comment\n\n"
        "DOMAIN=app.example.com  # trailing comment\n"
        "export DROPLET_NAME=web-1\n"
        "DIGITALOCEAN_TOKEN='tok=with#hash'\n"
        'DROPLET_REGION="ams3"\n'
    )
    s = load(tmp_path, text)
    assert s["DOMAIN"] == "app.example.com"
    assert s["DROPLET_NAME"] == "web-1"
    assert s.token.reveal() == "tok=with#hash"
    assert s["DROPLET_REGION"] == "ams3"
    assert s.sources["DROPLET_NAME"].startswith("env file")


def test_precedence_flag_over_environment_over_file_over_yaml(tmp_path):
    s = load(tmp_path, "DROPLET_NAME=from-file\nDEPLOY_ENV=staging\n", environ={"DROPLET_NAME": "from-env"})
    assert s["DROPLET_NAME"] == "from-env" and s["DEPLOY_ENV"] == "staging"
    assert s["DROPLET_SIZE"] == "s-1vcpu-1gb"  # invoke.yaml
    s = load(tmp_path, "SKIP_ALLOWLIST=false\n", flags={"SKIP_ALLOWLIST": True})
    assert s["SKIP_ALLOWLIST"] is True


def test_token_alias_and_secret_masking(tmp_path):
    s = load(tmp_path, environ={"DIGITALOCEAN_ACCESS_TOKEN": "alias-token-123"})
    assert isinstance(s.token, Secret) and s.token.reveal() == "alias-token-123"
    assert "alias-token-123" not in repr(s) and "alias-token-123" not in str(s.snapshot())


@pytest.mark.parametrize("env_text, key, fix_word", [
    ("DEPLOY_ENV=prod\n", "DEPLOY_ENV", "production"),
    ("DOMAIN=https://app.example.com/\n", "DOMAIN", "host name"),
    ("SSH_PORT=twenty\n", "SSH_PORT", "whole number"),
    ("DIGITALOCEAN_END_POINT=http://127.0.0.1:1/v2\n", "DIGITALOCEAN_END_POINT", "/v2/"),
])
def test_invalid_values_name_the_key_and_the_fix(tmp_path, env_text, key, fix_word):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, env_text)
    assert err.value.key == key
    assert fix_word in str(err.value)


def test_unparseable_line_names_the_line_not_the_content(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "DOMAIN=ok.example.com\nthis is not valid 'secret-ish-content\n")
    assert "my.env:2" in str(err.value)
    assert "secret-ish-content" not in str(err.value)


def test_missing_explicit_env_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(CONFIG, env_file=tmp_path / "nope.env", environ={}, registry=SecretRegistry(), base_dir=tmp_path)
    assert "--env-file" in str(err.value)


def test_require_names_key_aliases_and_file(tmp_path):
    s = load(tmp_path, "DOMAIN=a.example.com\n")
    with pytest.raises(ConfigError) as err:
        s.require("DIGITALOCEAN_TOKEN")
    assert "DIGITALOCEAN_ACCESS_TOKEN" in str(err.value) and "my.env" in str(err.value)


def test_stack_env_takes_only_example_keys_and_registers_their_secrets(tmp_path):
    reg = SecretRegistry()
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / ".env.example").write_text(
        "DOMAIN=example.com\nPOSTGRES_PASSWORD=change-me\nRATE_LIMIT_API_RPM=60\nFLOWER_BASIC_AUTH=\nADMIN_BASIC_AUTH=\n")
    (tmp_path / "stack" / "compose.yml").write_text("x: ${FLOWER_BASIC_AUTH:?set it} ${ADMIN_BASIC_AUTH:-}\n")
    env = tmp_path / ".env"
    env.write_text("DOMAIN=app.example.com\nPOSTGRES_PASSWORD=pg-canary-123\nUNRELATED=x\n")
    s = load_settings(CONFIG, env_file=env, environ={}, registry=reg, base_dir=tmp_path)
    assert list(s.stack_env) == ["DOMAIN", "POSTGRES_PASSWORD", "RATE_LIMIT_API_RPM", "FLOWER_BASIC_AUTH", "ADMIN_BASIC_AUTH"]
    assert s.stack_env["DOMAIN"] == "app.example.com"
    assert s.stack_env["RATE_LIMIT_API_RPM"] == "60"  # example default used
    assert missing_stack_keys(s) == ["FLOWER_BASIC_AUTH"]
    assert "pg-canary-123" not in redact("dsn postgres://u:pg-canary-123@db", reg)
    shipped = s.stack_env_file()
    assert "POSTGRES_PASSWORD='pg-canary-123'" in shipped and "UNRELATED" not in shipped


def test_dollar_signs_survive_compose_interpolation(tmp_path):
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / ".env.example").write_text("FLOWER_BASIC_AUTH=\n")
    env = tmp_path / ".env"
    env.write_text("FLOWER_BASIC_AUTH='admin:$apr1$abc$def'\n")
    s = load_settings(CONFIG, env_file=env, environ={}, registry=SecretRegistry(), base_dir=tmp_path)
    assert "FLOWER_BASIC_AUTH='admin:$apr1$abc$def'" in s.stack_env_file()


def test_secret_example_values_are_never_used_as_defaults(tmp_path):
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / ".env.example").write_text("FLOWER_BASIC_AUTH='admin:$apr1$examples$xyz'\nPOSTGRES_DB=app\n")
    (tmp_path / "stack" / "compose.yml").write_text("x: ${FLOWER_BASIC_AUTH:?set it}\n")
    s = load_settings(CONFIG, env_file=None, environ={}, registry=SecretRegistry(), base_dir=tmp_path)
    assert missing_stack_keys(s) == ["FLOWER_BASIC_AUTH"]
    assert s.stack_env["POSTGRES_DB"] == "app"
