"""Settings: env file parsing (FR-003), precedence, validation errors that name key and fix."""
import shutil
from pathlib import Path

import bcrypt
import pytest

from deploy.errors import ConfigError
from deploy.redact import Secret, SecretRegistry, redact
from deploy.settings import load_settings, missing_stack_keys, read_env_file

CONFIG = {
    "project": "demo", "deploy_env": "production", "subdomains": ["flower", "admin"],
    "droplet": {"name": "d1", "region": "fra1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64", "tags": ["demo"]},
    "ssh": {"user": "deploy", "key_path": "~/.ssh/id_ed25519", "port": 22, "known_hosts": "/tmp/kh", "connect_timeout": 5, "retries": 2},
    "logs": {"dir": "local_run_logs", "timestamp": True},
    "stack": {"dir": "stack"},
}

REPO = Path(__file__).resolve().parents[2]
# Made once with the commands the errors suggest (fixed, so a test never depends on chance).
STRONG = {
    "DJANGO_SECRET_KEY": "-9komTCyl2I0NcBWrHU21ZoII7MZDTRqNV4W5k9Ur3VUBIug9gdYwqFlB_i5-9jb",  # token_urlsafe(48)
    "INTERNAL_API_TOKEN": "a3835f9161389485745e707d37ad4f7d",  # 32 hex characters: `openssl rand -hex 16`
    "POSTGRES_PASSWORD": "FB4Eenj1y9a4BXct",  # token_urlsafe(12): 16 characters
    "POSTGRES_APP_PASSWORD": "Xq0v2J9dYk3T_mWz8Lr6NbH1cE5pGs7u",  # token_urlsafe(24)
    "REDIS_PASSWORD": "r7Kd-2mQx9ZpW4vN_8bT1yL6hF3jS0cA",  # token_urlsafe(24): URL-safe
    "FLOWER_BASIC_AUTH": "flower:" + bcrypt.hashpw(b"a long dashboard password", bcrypt.gensalt(4)).decode(),
    "ADMIN_BASIC_AUTH": "admin:" + bcrypt.hashpw(b"another long password", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1),
    "OTHER_SECRET": "Sh0rt-Ok",
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
    env.write_text("DOMAIN=app.example.com\nPOSTGRES_PASSWORD=pg-canary-123-Qm81Zt\nUNRELATED=x\n")
    s = load_settings(CONFIG, env_file=env, environ={}, registry=reg, base_dir=tmp_path)
    assert list(s.stack_env) == ["DOMAIN", "POSTGRES_PASSWORD", "RATE_LIMIT_API_RPM", "FLOWER_BASIC_AUTH", "ADMIN_BASIC_AUTH"]
    assert s.stack_env["DOMAIN"] == "app.example.com"
    assert s.stack_env["RATE_LIMIT_API_RPM"] == "60"  # example default used
    assert missing_stack_keys(s) == ["FLOWER_BASIC_AUTH"]
    assert "pg-canary-123" not in redact("dsn postgres://u:pg-canary-123-Qm81Zt@db", reg)
    shipped = s.stack_env_file()
    assert "POSTGRES_PASSWORD='pg-canary-123-Qm81Zt'" in shipped and "UNRELATED" not in shipped


def test_dollar_signs_survive_compose_interpolation(tmp_path):
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / ".env.example").write_text("FLOWER_BASIC_AUTH=\n")
    env = tmp_path / ".env"
    env.write_text(f"FLOWER_BASIC_AUTH='{STRONG['FLOWER_BASIC_AUTH']}'\n")
    s = load_settings(CONFIG, env_file=env, environ={}, registry=SecretRegistry(), base_dir=tmp_path)
    assert f"FLOWER_BASIC_AUTH='{STRONG['FLOWER_BASIC_AUTH']}'" in s.stack_env_file()


def test_secret_example_values_are_never_used_as_defaults(tmp_path):
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / ".env.example").write_text("FLOWER_BASIC_AUTH='admin:$apr1$examples$xyz'\nPOSTGRES_DB=app\n")
    (tmp_path / "stack" / "compose.yml").write_text("x: ${FLOWER_BASIC_AUTH:?set it}\n")
    s = load_settings(CONFIG, env_file=None, environ={}, registry=SecretRegistry(), base_dir=tmp_path)
    assert missing_stack_keys(s) == ["FLOWER_BASIC_AUTH"]
    assert s.stack_env["POSTGRES_DB"] == "app"


# --- issue 12 (NFR-004): weak secrets are refused up front, naming the key and the fix --------

STACK_SECRETS_EXAMPLE = "".join(f"{k}=\n" for k in STRONG)


def load_stack_secrets(tmp_path: Path, **overrides: str):
    return load(tmp_path, "".join(f"{k}='{v}'\n" for k, v in {**STRONG, **overrides}.items()),
                example=STACK_SECRETS_EXAMPLE)


def test_strong_secrets_are_accepted(tmp_path):
    s = load_stack_secrets(tmp_path)
    assert {k: v.reveal() for k, v in s.stack_env.items()} == STRONG
    assert load_stack_secrets(tmp_path, ADMIN_BASIC_AUTH="").stack_env["ADMIN_BASIC_AUTH"].reveal() == ""


@pytest.mark.parametrize("key, value, problem, fix", [
    ("DJANGO_SECRET_KEY", "Sh0rt-but-Mixed-key-9", "at least 32", "secrets.token_urlsafe(48)"),
    ("INTERNAL_API_TOKEN", "a" * 40, "one kind of character", "secrets.token_urlsafe(48)"),
    ("INTERNAL_API_TOKEN", "ab12" * 10, "different characters", "secrets.token_urlsafe(48)"),
    ("POSTGRES_PASSWORD", "Tr0ub4dor&3", "at least 16", "secrets.token_urlsafe"),
    ("POSTGRES_PASSWORD", "change-me-postgres-password", "placeholder", "secrets.token_urlsafe"),
    ("FLOWER_BASIC_AUTH", "admin:$apr1$Qx1b2c3d$abcdefghijklmnopqrstu/", "bcrypt", "htpasswd -nbB"),
    ("ADMIN_BASIC_AUTH", "admin:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "bcrypt", "bcrypt.hashpw"),
    ("FLOWER_BASIC_AUTH", "admin:$2y$05$tooShortToBeAHash", "bcrypt", "htpasswd -nbB"),
    ("OTHER_SECRET", "Ab1x", "too short or too common", "secrets.token_urlsafe"),
    ("REDIS_PASSWORD", "change-me-redis-password", "placeholder", "secrets.token_urlsafe(48)"),
    ("REDIS_PASSWORD", "Sh0rt-but-Mixed-redis-9", "at least 32", "secrets.token_urlsafe(48)"),
    ("REDIS_PASSWORD", "r7Kd/2mQx9ZpW4vN@8bT1yL6hF3jS0cA:x", "redis:// URL", "secrets.token_urlsafe(48)"),
    ("POSTGRES_APP_PASSWORD", "FB4Eenj1y9a4BXct", "at least 32", "secrets.token_urlsafe(48)"),
    ("OTHER_SECRET", "postgres", "too short or too common", "secrets.token_urlsafe"),
])
def test_weak_stack_secrets_are_refused_naming_the_key_and_how_to_make_a_good_one(tmp_path, key, value, problem, fix):
    with pytest.raises(ConfigError) as err:
        load_stack_secrets(tmp_path, **{key: value})
    assert err.value.key == key and err.value.exit_code == 2
    assert problem in err.value.message and fix in err.value.hint and "my.env" in err.value.hint
    assert value not in str(err.value)


def test_a_token_too_short_to_be_masked_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, environ={"DIGITALOCEAN_TOKEN": "abc"})
    assert err.value.key == "DIGITALOCEAN_TOKEN" and "abc" not in str(err.value)
    # a DigitalOcean token is made in its control panel, not with a local command
    assert "environment" in err.value.hint and "cloud.digitalocean.com" in err.value.hint
    assert "token_urlsafe" not in err.value.hint


@pytest.mark.parametrize("key", ["POSTGRES_PASSWORD", "DJANGO_SECRET_KEY", "INTERNAL_API_TOKEN",
                                 "FLOWER_BASIC_AUTH", "ADMIN_BASIC_AUTH", "POSTGRES_APP_PASSWORD",
                                 "REDIS_PASSWORD"])
def test_every_example_secret_of_the_stack_contract_is_refused(tmp_path, key):
    example = read_env_file(REPO / "stack" / ".env.example")
    stack = tmp_path / "stack"
    stack.mkdir()
    shutil.copy(REPO / "stack" / ".env.example", stack / ".env.example")
    env = tmp_path / "my.env"
    env.write_text(f"{key}='{example[key]}'\n")
    with pytest.raises(ConfigError) as err:
        load_settings(CONFIG, env_file=env, environ={}, registry=SecretRegistry(), base_dir=tmp_path)
    assert err.value.key == key
    assert "example" in err.value.message or "bcrypt" in err.value.message


@pytest.mark.parametrize("app_user, problem", [("app", "same role as POSTGRES_USER"),
                                               ("Stack-App;", "not a plain role name")])
def test_the_app_database_role_must_be_a_plain_name_and_not_the_superuser(tmp_path, app_user, problem):
    example = STACK_SECRETS_EXAMPLE + "POSTGRES_USER=app\nPOSTGRES_APP_USER=stack_app\n"
    env_text = "".join(f"{k}='{v}'\n" for k, v in STRONG.items()) + f"POSTGRES_APP_USER='{app_user}'\n"
    with pytest.raises(ConfigError) as err:
        load(tmp_path, env_text, example=example)
    assert err.value.key == "POSTGRES_APP_USER" and problem in err.value.message
    assert "stack_app" in err.value.hint
    # the example's role name is the default, and it is accepted
    s = load(tmp_path, "".join(f"{k}='{v}'\n" for k, v in STRONG.items()), example=example)
    assert s.stack_env["POSTGRES_APP_USER"] == "stack_app"
