"""The root .env.example a user copies: generated from the declarations in deploy/settings.py and
stack/.env.example, names every key the stack needs and the deployer's essentials."""
from pathlib import Path

import deploy.settings as settings
from deploy.settings import KEYS, parse_stack_example, read_env_file, required_stack_keys
from deploy.settings_docs import env_example

REPO = Path(__file__).resolve().parents[2]


def test_root_env_example_is_the_generated_one():
    committed = (REPO / ".env.example").read_text()
    assert committed == env_example(REPO / "stack" / ".env.example"), (
        ".env.example drifted from deploy/settings.py or stack/.env.example; regenerate it with "
        "`python -m deploy.settings_docs --env-example > .env.example`")


def test_a_changed_declaration_or_stack_contract_is_drift(tmp_path, monkeypatch):
    stack = tmp_path / ".env.example"
    stack.write_text((REPO / "stack" / ".env.example").read_text() + "# new\nNEW_STACK_SETTING=1\n")
    assert "NEW_STACK_SETTING=1" in env_example(stack) != env_example(REPO / "stack" / ".env.example")
    changed = tuple(k if k.env != "SSH_PORT" else settings.Key(**{**k.__dict__, "default": 2222}) for k in KEYS)
    monkeypatch.setattr(settings, "KEYS", changed)
    assert "# SSH_PORT=2222" in env_example(REPO / "stack" / ".env.example")


def test_root_env_example_covers_the_stack_contract():
    root = parse_stack_example(REPO / ".env.example")
    stack = parse_stack_example(REPO / "stack" / ".env.example")
    assert set(stack) <= set(root), f"add to .env.example: {sorted(set(stack) - set(root))}"
    for key in ("DIGITALOCEAN_TOKEN", "DOMAIN", "DEPLOY_ENV", "SSH_KEY_PATH"):
        assert key in root
    # Every key the compose file requires is named in the stack's contract file.
    assert required_stack_keys(REPO / "stack") <= set(stack)


def test_every_setting_is_named_and_no_secret_has_a_value():
    text = (REPO / ".env.example").read_text()
    assert all(f"{k.env}=" in text for k in KEYS)
    for name, value in read_env_file(REPO / ".env.example").items():
        assert not value or not settings.is_secret_name(name), f"{name} has a value in .env.example"
