"""The single redaction function: by value, by key and by shape."""
import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from deploy.redact import MASK, Secret, SecretRegistry, is_distinctive, is_secret_name, redact, redact_mapping


def make_registry(*values: str) -> SecretRegistry:
    reg = SecretRegistry()
    for v in values:
        reg.add_value(v)
    return reg


def test_known_value_is_masked_anywhere_even_encoded():
    canary = "canary-Value-9f8e7d"
    reg = make_registry(canary)
    basic = base64.b64encode(canary.encode()).decode()
    text = f"error: login failed for {canary}; url=https://x/?p=canary-Value-9f8e7d; hdr={basic}"
    out = redact(text, reg)
    assert canary not in out and basic not in out
    assert out.count(MASK) == 3


def test_secret_named_keys_are_masked_in_env_yaml_and_json_forms():
    reg = SecretRegistry()
    env = "POSTGRES_PASSWORD=hunter2hunter\nDOMAIN=app.example.com\nexport API_TOKEN='abc def'\n"
    out = redact(env, reg)
    assert "hunter2hunter" not in out and "abc def" not in out
    assert "DOMAIN=app.example.com" in out
    doc = json.dumps({"DJANGO_SECRET_KEY": "s3cr3t-django", "name": "web"})
    out = redact(doc, reg)
    assert "s3cr3t-django" not in out and json.loads(out)["name"] == "web"
    docker_env = json.dumps(["POSTGRES_PASSWORD=pw-from-docker", "PATH=/usr/bin"])
    out = redact(docker_env, reg)
    assert "pw-from-docker" not in out and json.loads(out)[1] == "PATH=/usr/bin"


def test_shapes_are_masked_without_being_told():
    reg = SecretRegistry()
    token = "dop_v1_" + "a1" * 32
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    text = "\n".join([
        f"token {token}",
        "redis://default:sup3rpass@redis:6379/0",
        pem,
        "admin:$apr1$Qx1b2c3d$abcdefghijklmnopqrstu/",
        "Authorization: Bearer abcdefghijklmnop123",
    ])
    out = redact(text, reg)
    for leaked in (token, "sup3rpass", "b3BlbnNzaC1rZXktdjEAAAAA", "$apr1$Qx1b2c3d", "abcdefghijklmnop123"):
        assert leaked not in out
    assert "redis://default:" in out  # the user stays readable


def test_short_or_harmless_values_stay_readable():
    reg = make_registry("on", "1")
    assert redact("feature on, 1 worker", reg) == "feature on, 1 worker"
    assert not is_secret_name("SSH_KEY_PATH") and not is_secret_name("OPERATOR_IP_URL")
    assert is_secret_name("FLOWER_BASIC_AUTH") and is_secret_name("DIGITALOCEAN_TOKEN")


def test_secret_type_never_prints_itself():
    s = Secret("do-not-print-me")
    assert "do-not-print-me" not in f"{s} {s!r} {[s]}"
    assert s.reveal() == "do-not-print-me"


def test_redact_mapping_masks_secret_keys_whole():
    out = redact_mapping({"RATE_LIMIT_API_RPM": "60", "INTERNAL_API_TOKEN": "x", "NAME": Secret("abcdefgh")}, SecretRegistry())
    assert out == {"RATE_LIMIT_API_RPM": "60", "INTERNAL_API_TOKEN": MASK, "NAME": MASK}


def test_json_stays_valid_json_after_redaction():
    doc = json.dumps({"ssh_key_registered": True, "api_key": 123456789, "auth": None, "secret_key": "abcdefgh"})
    out = json.loads(redact(doc, SecretRegistry()))
    assert out["ssh_key_registered"] is True and out["auth"] is None
    assert out["api_key"] == MASK and out["secret_key"] == MASK


def test_json_strings_with_escaped_quotes_are_masked_whole():
    doc = json.dumps({"www_authenticate": 'Basic realm="traefik"', "next": 1}, indent=2)
    out = json.loads(redact(doc, SecretRegistry()))
    assert out == {"www_authenticate": MASK, "next": 1}


def test_secret_named_objects_keep_their_structure():
    doc = json.dumps({"basicAuth": {"users": ["admin:$apr1$abcdefgh$0123456789abcdefghijkl"], "removeHeader": True}}, indent=2)
    out = json.loads(redact(doc, SecretRegistry()))
    assert out["basicAuth"]["removeHeader"] is True
    assert "$apr1$abcdefgh" not in out["basicAuth"]["users"][0]


# --- issue 12 (NFR-004): what an empty or short registry used to let through ------------------

def test_env_line_value_runs_to_the_end_of_the_line():
    # An env-file value may hold spaces, commas and braces: all of it is the secret.
    reg = SecretRegistry()
    text = "POSTGRES_PASSWORD=horse battery,staple\nDJANGO_SECRET_KEY=abc{def}ghi\nDOMAIN=app.example.com\n"
    assert redact(text, reg) == f"POSTGRES_PASSWORD={MASK}\nDJANGO_SECRET_KEY={MASK}\nDOMAIN=app.example.com\n"


@pytest.mark.parametrize("text, leaked, kept", [
    ("url: https://h/x?token=tok-Secret-77&page=2", "tok-Secret-77", "page=2"),
    ("cmd: --password=pw-Secret-88", "pw-Secret-88", "cmd: --password="),
    ('{"env": "POSTGRES_PASSWORD=pg-Secret-99", "next": "x"}', "pg-Secret-99", '"next": "x"'),
    ('["DB=1", "API_TOKEN=a b,c{d}", "PATH=/usr/bin"]', " b,c{d}", '"PATH=/usr/bin"'),
])
def test_an_earlier_harmless_key_does_not_hide_a_later_secret(text, leaked, kept):
    out = redact(text, SecretRegistry())
    assert leaked not in out and MASK in out and kept in out
    if text.startswith(("{", "[")):
        json.loads(out)  # still valid JSON


def test_registered_values_are_masked_in_escaped_forms():
    value = 'pa"ss\\wo&rd<9>Zq'
    reg = make_registry(value)
    go_json = json.dumps(value)[1:-1].replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    forms = {
        "json": json.dumps(value)[1:-1],      # a JSON document (docker inspect, run.json)
        "go-json": go_json,                   # Go's encoding/json escapes <, > and &
        "go-quoted": 'pa\\"ss\\\\wo&rd<9>Zq',  # Go's %q / strconv.Quote
        "url": quote(value, safe=""),
        "url-plus": quote_plus(value),
    }
    for name, form in forms.items():
        out = redact(f"container said [{form}] and stopped", reg)
        assert out == f"container said [{MASK}] and stopped", name


def test_url_userinfo_with_an_empty_user_masks_the_password():
    out = redact("broker redis://:r3dis-Pw-x1@redis:6379/0 and postgres://app:pg-Pw-x2@db/app", SecretRegistry())
    assert "r3dis-Pw-x1" not in out and "pg-Pw-x2" not in out
    assert f"redis://:{MASK}@redis:6379/0" in out and f"postgres://app:{MASK}@db/app" in out


def test_a_registered_secret_split_across_lines_is_masked():
    secret = "Wrapped-Secret-0123456789abcdef"
    reg = make_registry(secret)
    text = f"line one {secret[:12]}\n{secret[12:]} tail\n"
    out = redact(text, reg)
    assert secret[:12] not in out and secret[12:] not in out
    assert out.count("\n") == text.count("\n") and out.endswith(" tail\n")


@pytest.mark.parametrize("brk", ["\\\n    ", "\r\n", "\n\t", "\n"])
def test_a_secret_wrapped_by_a_shell_continuation_or_indent_is_masked_whole_and_nothing_else(brk):
    secret, other = "Wrapped-Secret-0123456789abcdef", "Another-Secret-fedcba9876543210"
    reg = make_registry(secret, other)
    text = f"keep me\nx {secret[:5]}{brk}{secret[5:20]}{brk}{secret[20:]} y {other} z\nand me"
    out = redact(text, reg)
    assert out == f"keep me\nx {MASK}" + "\n" * 2 + f" y {MASK} z\nand me"


def test_short_registered_values_are_masked_in_key_value_contexts_only():
    reg = make_registry("Ab1x")  # under MIN_SECRET_VALUE_LENGTH: too short to replace everywhere
    assert redact("built Ab1x layers", reg) == "built Ab1x layers"
    assert redact("login=Ab1x next", reg) == f"login={MASK} next"
    assert redact('{"user": "Ab1x"}', reg) == f'{{"user": "{MASK}"}}'


def test_a_common_word_secret_does_not_blank_image_names():
    reg = make_registry("postgres")
    out = redact("image postgres:15-bookworm\nPOSTGRES_PASSWORD=postgres\n", reg)
    assert out == f"image postgres:15-bookworm\nPOSTGRES_PASSWORD={MASK}\n"
    assert not is_distinctive("postgres") and not is_distinctive("123456") and not is_distinctive("Ab1x")
    assert is_distinctive("hunter2hunter") and is_distinctive("horsebatterystaple")


def test_help_text_keeps_its_wording_while_secrets_around_it_are_masked():
    reg = make_registry("canary-In-Help-42")
    hint = 'write it as KEY=value, KEY="quoted value" or export KEY=value; comments start with #'
    reg.add_help(hint)
    text = f"--env-file has a bad line\n  fix: {hint}\nAPI_TOKEN=leaky value\nsaw canary-In-Help-42"
    out = redact(text, reg)
    assert f"  fix: {hint}\n" in out
    assert "leaky value" not in out and "canary-In-Help-42" not in out
    # an unregistered hint is still key-masked: protection is for exact, known help texts only
    assert "KEY=value, KEY=" not in redact(hint, SecretRegistry())
    # a help text standing as a secret key's whole value is that value: masked
    reg.add_help("set it")
    assert redact("API_TOKEN=set it", reg) == f"API_TOKEN={MASK}"
    assert redact("API_TOKEN=abc def. Fix: set it", reg) == f"API_TOKEN={MASK} set it"
