"""Run the real `inv` command line against the fake DigitalOcean API and a real sshd."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.fake_do import FakeDigitalOcean
from tests.fake_do.helpers import RecordingBackend

REPO = Path(__file__).resolve().parents[2]
TOKEN = "dop_v1_" + "c4a7" * 16  # shaped like a real token, so shape-based redaction is exercised too
# Strong enough for Settings (long random values, bcrypt htpasswd lines), recognisable in a leak.
CANARIES = {
    "POSTGRES_PASSWORD": "pg-canary-Qm81Zt-4Hv9",
    "POSTGRES_APP_PASSWORD": "pa-canary-Vn35Gs-8Jw1Xc4Mk7Qp9Rt2",
    "REDIS_PASSWORD": "rd-canary-Hs62Lq-5Bz8Nw3Fy6Tv1Kc9",
    "DJANGO_SECRET_KEY": "dj-canary-Lk29Xw-7Hq3Vb8Np2Tc5RmZ",
    "INTERNAL_API_TOKEN": "it-canary-Rb44Pe-2Wd6Kf9Ys3Ln8JxQ",
    "FLOWER_BASIC_AUTH": "admin:$2b$05$PoEIvFN9sy0hBcNopCSzWeK8nxDY/iYGjJX2ixcMWEnhSgDwFqx/u",
    "ADMIN_BASIC_AUTH": "admin:$2b$05$fxGeP4TT1MjT4G31UrvH.Orhw6CQWhKGe8VwoC.CJKMRb.QJuA5kK",
}


@pytest.fixture
def fake():
    api = FakeDigitalOcean(TOKEN, backend=RecordingBackend(ip="127.0.0.1"), operator_ip="198.51.100.7")
    api.start()
    yield api
    api.stop()


@dataclass
class Cli:
    tmp: Path
    env_file: Path
    logs: Path

    def run(self, *args: str, env_extra: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN", "DOMAIN", "DEPLOY_"))}
        env.update({"LOGS_DIR": str(self.logs), "COLUMNS": "120"}, **(env_extra or {}))
        # stdin is never this terminal: a task that asks (inv destroy) sees what a script sees
        return subprocess.run([sys.executable, "-m", "invoke", *args, "--env-file", str(self.env_file)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def runs(self) -> list[Path]:
        return sorted(p for p in self.logs.iterdir() if p.is_dir())

    def manifest(self, folder: Path | None = None) -> dict:
        folder = folder or self.runs()[-1]
        return json.loads((folder / "run.json").read_text())


def write_env(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()))


@pytest.fixture
def cli(tmp_path, fake, sshd) -> Cli:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env_file = tmp_path / "test.env"
    write_env(env_file, {
        "DIGITALOCEAN_TOKEN": TOKEN,
        "DIGITALOCEAN_END_POINT": fake.base_url,
        "DOMAIN": "app.example.test",
        "SSH_KEY_PATH": str(key),
        "SSH_PORT": str(sshd.port),
        "SSH_KNOWN_HOSTS": str(tmp_path / "known_hosts"),
        "OPERATOR_IP_URL": fake.root_url + "/lab/my-ip",
        "DO_ACTIVE_TIMEOUT": "10",
        "DO_SSH_WAIT_TIMEOUT": "10",
        "DO_REQUEST_TIMEOUT": "3",
        **CANARIES,
    })
    return Cli(tmp=tmp_path, env_file=env_file, logs=tmp_path / "runs")


def assert_no_secret_in(folder: Path, secrets: list[str]) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for secret in secrets:
                assert secret not in text, f"{secret[:6]}... leaked into {path.relative_to(folder)}"
