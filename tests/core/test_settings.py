"""Settings: env file parsing (FR-003), precedence, validation errors that name key and fix."""
import os
import shutil
from pathlib import Path

import bcrypt
import pytest
import yaml

from core.errors import ConfigError
from deploy.redact import Secret, SecretRegistry, redact
from deploy.settings import KEYS, KEYS_BY_ENV, Flags, Settings, load_settings, missing_stack_keys, read_env_file

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
    assert s.domain == "app.example.com"
    assert s.droplet_name == "web-1"
    assert s.token.reveal() == "tok=with#hash"
    assert s.droplet_region == "ams3"
    assert s.sources["DROPLET_NAME"].startswith("env file")


def test_precedence_flag_over_environment_over_file_over_yaml(tmp_path):
    s = load(tmp_path, "DROPLET_NAME=from-file\nDEPLOY_ENV=staging\n", environ={"DROPLET_NAME": "from-env"})
    assert s.droplet_name == "from-env" and s.deploy_env == "staging"
    assert s.droplet_size == "s-1vcpu-1gb"  # invoke.yaml
    s = load(tmp_path, "SKIP_ALLOWLIST=false\n", flags={"SKIP_ALLOWLIST": True})
    assert s.skip_allowlist is True


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


# --- typed settings: one declaration per setting ------------------------------------------------

def test_attributes_are_typed_and_agree_with_the_values_by_env_name(tmp_path):
    s = load(tmp_path, "DOMAIN=app.example.com\nNODES=3\nSSH_PORT=2222\nDROPLET_TAGS=a, b\n")
    assert s.nodes == 3 and s.ssh_port == 2222 and s.droplet_tags == ("a", "b") and s.domain == "app.example.com"
    assert isinstance(s.ssh_connect_timeout, float) and isinstance(s.check_rate_limit, bool)
    assert s.ssh_key_path == Path("~/.ssh/id_ed25519").expanduser() and s.stack_dir == tmp_path / "stack"
    for key in KEYS:
        attr, item = getattr(s, key.attr), s.values[key.env]
        assert attr == (Path(os.path.expanduser(item)) if key.kind == "path" else item), key.env


def test_a_misspelt_setting_is_an_error_not_a_lookup(tmp_path):
    s = load(tmp_path)
    assert "__getattr__" not in vars(Settings)  # attributes are declared, so mypy checks them
    with pytest.raises(AttributeError):
        s.nodez  # noqa: B018
    with pytest.raises(KeyError, match="not a setting"):
        s.is_set("NODEZ")
    with pytest.raises(ValueError, match="NODEZ"):
        load(tmp_path, flags={"NODEZ": 3})


def test_is_set_tells_the_operators_value_from_the_default(tmp_path):
    s = load(tmp_path)
    assert s.nodes is None and not s.is_set("NODES") and s.source("NODES") == "default"
    assert s.is_set("DROPLET_NAME") and s.source("DROPLET_NAME") == "invoke.yaml"   # CONFIG sets it
    assert load(tmp_path, "NODES=1\n").is_set("NODES")                             # even to the default
    assert load(tmp_path, environ={"NODES": "2"}).source("NODES") == "environment (NODES)"
    assert load(tmp_path, flags={"NODES": "3"}).source("NODES") == "flag"
    assert load_settings({"droplet": {"nodes": 2}}, environ={}, registry=SecretRegistry(), base_dir=tmp_path).is_set("NODES")
    assert not load(tmp_path, "NODES=\n").is_set("NODES")                           # empty means unset


def test_built_in_defaults_apply_without_invoke_yaml(tmp_path):
    s = load_settings({}, environ={}, registry=SecretRegistry(), base_dir=tmp_path)
    assert not any(s.is_set(k.env) for k in KEYS)
    assert (s.deploy_env, s.nodes, s.releases_keep, s.check_p95_budget) == ("production", None, 5, 5.0)
    assert s.logs_dir == tmp_path / "local_run_logs" and s.remote_base == "/opt/stackdeploy"


@pytest.mark.parametrize("name, value, problem", [
    ("NODES", "0", "must be 1 to 25"),
    ("NODES", "1.5", "is not a whole number"),
    ("SSH_PORT", "70000", "must be a port number"),
    ("RELEASES_KEEP", "1", "at least 2"),
    ("DROPLET_IP", "not-an-ip", "not an IP address"),
    ("REGISTRY_NAME", "Has_Caps", "lower-case"),
    ("SKIP_ALLOWLIST", "maybe", "true or false"),
    ("LOCK_TTL", "60", "at least 600"),
])
def test_each_declared_check_names_the_setting_and_the_fix(tmp_path, name, value, problem):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, environ={name: value})
    assert err.value.key == name and problem in err.value.message and name in err.value.hint


def test_every_setting_is_declared_completely():
    for key in KEYS:
        assert key.doc.endswith((".", ")")) and key.kind, key.env
        assert (key.check is None) == (key.fix == "") or key.env == "DNS_RESOLVER", f"{key.env}: a check needs its fix"
        if key.default is not None:  # the default passes its own check
            value = key.default if key.kind != "path" else str(key.default)
            assert key.check is None or key.check(value) is None, key.env
    assert set(Flags.__annotations__) <= set(KEYS_BY_ENV)
    for name, kind in {"NODES": "int", "DEPLOY_ENV": "str", "SKIP_ALLOWLIST": "bool", "LOGS_TIMESTAMP": "bool"}.items():
        assert KEYS_BY_ENV[name].kind == kind


def _leaves(node, prefix=""):
    for name, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def test_invoke_yaml_and_the_declarations_cannot_disagree():
    """invoke.yaml holds overrides only: every key is a declared setting's path, no value repeats
    the built-in default (the defaults live in deploy/settings.py alone), and it loads."""
    section = yaml.safe_load((REPO / "invoke.yaml").read_text())["deploy"] or {}
    by_path = {k.path: k for k in KEYS if k.path}
    for path, value in _leaves(section):
        assert path in by_path, f"invoke.yaml: deploy.{path} is not a setting; known: {sorted(by_path)}"
        key = by_path[path]
        default = list(key.default) if isinstance(key.default, tuple) else key.default
        assert value != default and str(value) != str(default), (
            f"invoke.yaml: deploy.{path} repeats the built-in default of {key.env}; remove it (it would count as set)")
    load_settings(section, environ={}, registry=SecretRegistry(), base_dir=REPO)
