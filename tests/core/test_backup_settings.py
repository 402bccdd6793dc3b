"""Backup settings (deploy/backup_config.py through load_settings): a bucket needs its keys, a
region and a cipher pass; the repository's path is the stack's own; a test endpoint's CA is a
real PEM file shipped to the postgres service."""
from pathlib import Path

import pytest

from core.errors import ConfigError
from deploy import backup_config, wiring
from tests.checks.certs import STAGING, make_cert
from tests.core.test_settings import load

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = (REPO / "stack" / ".env.example").read_text()
BUCKET = {"SPACES_BUCKET": "acme-backups", "SPACES_REGION": "ams3", "SPACES_KEY": "DO00QWERTYUIOPASDFGH",
          "SPACES_SECRET": "s3cret-Vb7Nq2Lx9Rt4Wm8Kp3Zs6Yd1Hf5Jc0", "BACKUP_CIPHER_PASS": "Zq8wX3vN5tR7yB2mK4pL9sD6fG1hJ0aQ"}


def settings_with(tmp_path, **values):
    return load(tmp_path, "".join(f"{k}='{v}'\n" for k, v in values.items()), example=EXAMPLE)


def test_without_a_bucket_backups_stay_on_the_droplet_under_the_stacks_path(tmp_path):
    s = settings_with(tmp_path, DROPLET_NAME="shop-1")
    assert not backup_config.off_droplet(s.stack_env)
    assert s.stack_env["BACKUP_REPO_PATH"] == "/shop-1"
    assert s.stack_env["SPACES_CA_FILE"] == ""


def test_a_bucket_with_its_keys_region_and_cipher_pass_is_accepted_and_its_secrets_are_secret(tmp_path):
    s = settings_with(tmp_path, **BUCKET)
    assert backup_config.off_droplet(s.stack_env)
    assert {"SPACES_KEY", "SPACES_SECRET", "BACKUP_CIPHER_PASS"} <= s.secret_keys
    # The droplet gets the real values (its .env, uploaded over SFTP, 0600); logs get masks.
    assert BUCKET["SPACES_SECRET"] in s.stack_env_file()


@pytest.mark.parametrize("missing", ["SPACES_KEY", "SPACES_SECRET", "BACKUP_CIPHER_PASS", "SPACES_REGION"])
def test_a_bucket_without_one_of_its_settings_is_refused_naming_it(tmp_path, missing):
    values = {k: v for k, v in BUCKET.items() if k != missing}
    with pytest.raises(ConfigError) as err:
        settings_with(tmp_path, **values)
    assert err.value.key == missing
    assert "SPACES_BUCKET is set" in str(err.value)
    for secret in ("SPACES_SECRET", "BACKUP_CIPHER_PASS"):
        assert BUCKET[secret] not in str(err.value)


def test_a_short_cipher_pass_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        settings_with(tmp_path, **{**BUCKET, "BACKUP_CIPHER_PASS": "Short-pass-1234"})
    assert err.value.key == "BACKUP_CIPHER_PASS" and "at least 32" in str(err.value)


def test_a_test_endpoints_ca_is_shipped_to_postgres_and_named_in_its_environment(tmp_path):
    ca = make_cert(tmp_path, STAGING, "s3.test").ca
    s = settings_with(tmp_path, **BUCKET, SPACES_ENDPOINT="10.77.0.249", SPACES_TEST_CA_ROOT=str(ca))
    assert s.stack_env["SPACES_CA_FILE"] == backup_config.TEST_CA_CONTAINER_PATH
    release = wiring.local_release(s)
    assert release.overlay[backup_config.TEST_CA_RELEASE_PATH] == Path(ca).read_bytes()


def test_a_test_ca_that_is_not_a_pem_file_is_refused(tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError) as err:
        settings_with(tmp_path, **BUCKET, SPACES_TEST_CA_ROOT=str(bogus))
    assert err.value.key == "SPACES_TEST_CA_ROOT" and "no PEM certificate" in str(err.value)


def test_the_repositorys_location_names_the_bucket_and_the_stacks_path_and_nothing_on_the_droplet(tmp_path):
    s = settings_with(tmp_path, DROPLET_NAME="shop-1", **BUCKET)
    assert backup_config.location(s, s.stack_env) == "s3://acme-backups/shop-1 (ams3)"
    s = settings_with(tmp_path, DROPLET_NAME="shop-1", **{**BUCKET, "SPACES_ENDPOINT": "https://10.77.0.251"})
    assert backup_config.location(s, s.stack_env) == "s3://acme-backups/shop-1 (https://10.77.0.251)"
    assert backup_config.location(s, settings_with(tmp_path, DROPLET_NAME="shop-1").stack_env) is None
