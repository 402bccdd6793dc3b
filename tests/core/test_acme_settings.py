"""The CA policy in Settings (FR-011): staging by default, production impossible, any other CA
only as an explicitly marked test CA whose listener root is a real PEM file."""
from pathlib import Path

import pytest

from core.errors import ConfigError
from deploy import acme
from tests.core.test_settings import load
from tests.checks.certs import STAGING, make_cert

STAGING_URL = "https://acme-staging-v02.api.letsencrypt.org/directory"
PEBBLE = "https://10.77.0.253:14000/dir"


def test_default_is_lets_encrypt_staging(tmp_path):
    s = load(tmp_path)
    assert acme.is_le_staging(s.acme_ca_server) and not s.is_set("ACME_CA_SERVER")
    assert acme.test_ca_server(s) is None
    assert acme.release_overlay(s, s.stack_dir) == {}


@pytest.mark.parametrize("url", [
    "https://acme-v02.api.letsencrypt.org/directory",
    "https://ACME-V02.api.letsencrypt.org/directory/",
    "https://acme-v01.api.letsencrypt.org/directory",
    "https://api.letsencrypt.org/directory",
])
@pytest.mark.parametrize("marked", [False, True])
def test_production_directory_is_refused_even_when_marked_as_test_ca(tmp_path, url, marked):
    root = make_cert(tmp_path, STAGING, "x.test").ca
    environ = {"ACME_CA_SERVER": url}
    if marked:
        environ.update(ACME_TEST_CA="true", ACME_TEST_CA_ROOT=str(root))
    with pytest.raises(ConfigError) as err:
        load(tmp_path, environ=environ)
    assert err.value.key == "ACME_CA_SERVER"
    assert "production" in str(err.value) and "unset ACME_CA_SERVER" in str(err.value)


def test_other_ca_needs_the_test_ca_mark(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, environ={"ACME_CA_SERVER": PEBBLE})
    assert err.value.key == "ACME_CA_SERVER" and "ACME_TEST_CA=true" in str(err.value)


def test_marked_test_ca_with_its_root_is_accepted_and_shipped(tmp_path):
    root = make_cert(tmp_path, STAGING, "x.test").ca
    stack = tmp_path / "stack"
    (stack / "traefik").mkdir(parents=True)
    (stack / "traefik" / "traefik.yml").write_text(
        "certificatesResolvers:\n  le:\n    acme:\n      caServer: " + STAGING_URL + "\n      storage: /a.json\n")
    (stack / ".env.example").write_text("LEGO_CA_CERTIFICATES=\nDOMAIN=example.com\n")
    s = load(tmp_path, environ={"ACME_CA_SERVER": PEBBLE, "ACME_TEST_CA": "1", "ACME_TEST_CA_ROOT": str(root)})
    assert acme.test_ca_server(s) == PEBBLE
    overlay = acme.release_overlay(s, s.stack_dir)
    static = overlay["traefik/traefik.yml"].decode()
    assert f"      caServer: {PEBBLE}" in static and STAGING_URL not in static
    assert "storage: /a.json" in static
    assert overlay[acme.TEST_CA_RELEASE_PATH] == root.read_bytes()
    assert s.stack_env["LEGO_CA_CERTIFICATES"] == acme.TEST_CA_CONTAINER_PATH


@pytest.mark.parametrize("environ, key, fragment", [
    ({"ACME_CA_SERVER": "http://10.0.0.1:14000/dir", "ACME_TEST_CA": "1"}, "ACME_CA_SERVER", "https://"),
    ({"ACME_TEST_CA": "1"}, "ACME_TEST_CA", "staging"),
    ({"ACME_TEST_CA_ROOT": "/x.pem"}, "ACME_TEST_CA_ROOT", "no test CA"),
    ({"ACME_CA_SERVER": PEBBLE, "ACME_TEST_CA": "1", "ACME_TEST_CA_ROOT": "/nonexistent/ca.pem"},
     "ACME_TEST_CA_ROOT", "cannot be read"),
])
def test_bad_ca_settings_name_the_setting_and_the_fix(tmp_path, environ, key, fragment):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, environ=environ)
    assert err.value.key == key and fragment in str(err.value)


def test_a_root_that_is_not_pem_is_refused(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as err:
        load(tmp_path, environ={"ACME_CA_SERVER": PEBBLE, "ACME_TEST_CA": "1", "ACME_TEST_CA_ROOT": str(bad)})
    assert err.value.key == "ACME_TEST_CA_ROOT" and "no PEM certificate" in str(err.value)


def test_render_needs_exactly_one_ca_server_line():
    with pytest.raises(ConfigError):
        acme.render_static_config("entryPoints: {}\n", PEBBLE)
    with pytest.raises(ConfigError):
        acme.render_static_config("caServer: a\ncaServer: b\n", PEBBLE)


def test_the_real_stack_renders_for_a_test_ca():
    text = (Path(__file__).resolve().parents[2] / "stack" / "traefik" / "traefik.yml").read_text()
    out = acme.render_static_config(text, PEBBLE)
    assert out.count(PEBBLE) == 1 and STAGING_URL not in out


def test_a_test_ca_without_the_stack_traefik_yml_is_a_clear_error(tmp_path):
    root = make_cert(tmp_path, STAGING, "x.test").ca
    s = load(tmp_path, environ={"ACME_CA_SERVER": PEBBLE, "ACME_TEST_CA": "1", "ACME_TEST_CA_ROOT": str(root)})
    with pytest.raises(ConfigError) as err:
        acme.release_overlay(s, s.stack_dir)
    assert err.value.key == "ACME_CA_SERVER" and "traefik.yml does not exist" in str(err.value)
