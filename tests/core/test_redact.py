"""The single redaction function: by value, by key and by shape."""
import base64
import json

from deploy.redact import MASK, Secret, SecretRegistry, is_secret_name, redact, redact_mapping


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
