"""The root .env.example a user copies names every key the stack needs and the deployer's essentials."""
from pathlib import Path

from deploy.settings import parse_stack_example, required_stack_keys

REPO = Path(__file__).resolve().parents[2]


def test_root_env_example_covers_the_stack_contract():
    root = parse_stack_example(REPO / ".env.example")
    stack = parse_stack_example(REPO / "stack" / ".env.example")
    assert set(stack) <= set(root), f"add to .env.example: {sorted(set(stack) - set(root))}"
    for key in ("DIGITALOCEAN_TOKEN", "DOMAIN", "DEPLOY_ENV", "SSH_KEY_PATH"):
        assert key in root
    # Every key the compose file requires is named in the stack's contract file.
    assert required_stack_keys(REPO / "stack") <= set(stack)
