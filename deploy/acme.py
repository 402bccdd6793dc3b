"""Which ACME CA Traefik may use (FR-011/NFR-003): Let's Encrypt staging by default, the
production directory never, any other CA only when the operator marks it as a test CA.

A test CA (Pebble in the lab) reaches the droplet as a rendered traefik.yml whose caServer
names it, plus the PEM that signs its HTTPS listener for lego's LEGO_CA_CERTIFICATES.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from cryptography import x509

from core.errors import ConfigError
from deploy.tls import STAGING_CA_URL

LE_API_SUFFIX = ".api.letsencrypt.org"
# Where the test CA's root lands in the release and in the Traefik container.
TEST_CA_RELEASE_PATH = "traefik/ca/test-ca.pem"
TEST_CA_CONTAINER_PATH = "/etc/traefik/ca/test-ca.pem"
_CA_SERVER_LINE = re.compile(r"^(?P<indent>\s*)caServer:\s*\S+.*$", re.MULTILINE)


class AcmeChoice(Protocol):
    """The three settings that choose the CA (deploy/settings.py's Settings has them)."""

    acme_ca_server: str
    acme_test_ca: bool
    acme_test_ca_root: str


def _choice(source: AcmeChoice) -> tuple[str, bool, str | None]:
    """(CA directory URL, marked as a test CA, test CA listener root or None)."""
    return source.acme_ca_server or STAGING_CA_URL, source.acme_test_ca, source.acme_test_ca_root or None


def is_le_production(url: str) -> bool:
    """Any Let's Encrypt API host that is not staging (acme-v02, acme-v01, future names)."""
    host = (urlsplit(url.strip()).hostname or "").lower().rstrip(".")
    return (host == LE_API_SUFFIX[1:] or host.endswith(LE_API_SUFFIX)) and not host.startswith("acme-staging")


def is_le_staging(url: str) -> bool:
    return url.strip().rstrip("/") == STAGING_CA_URL


def validate(settings: AcmeChoice) -> None:
    """ConfigError for a CA the simulation must not use; names the setting and the fix."""
    url, test_ca, root = _choice(settings)
    if is_le_production(url):
        raise ConfigError("ACME_CA_SERVER", "is Let's Encrypt's production directory, which this simulation "
                          "must never use (staging certificates only, FR-011)",
                          f"unset ACME_CA_SERVER (the default is staging: {STAGING_CA_URL})")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError("ACME_CA_SERVER", f"is {url!r}, not an https:// ACME directory URL",
                          f"unset it for Let's Encrypt staging, or give the directory URL of a test CA")
    if is_le_staging(url):
        if test_ca:
            raise ConfigError("ACME_TEST_CA", "is true but ACME_CA_SERVER is Let's Encrypt staging",
                              "set ACME_TEST_CA=false, or point ACME_CA_SERVER at your test CA")
        if root:
            raise ConfigError("ACME_TEST_CA_ROOT", "is set but no test CA is configured",
                              "unset ACME_TEST_CA_ROOT, or set ACME_TEST_CA=true and ACME_CA_SERVER")
        return
    if not test_ca:
        raise ConfigError("ACME_CA_SERVER", f"is {url}, which is not Let's Encrypt staging",
                          "if it is a test CA such as Pebble, set ACME_TEST_CA=true (and ACME_TEST_CA_ROOT to "
                          f"the PEM that signs its HTTPS listener); otherwise unset ACME_CA_SERVER ({STAGING_CA_URL})")
    if root:
        _check_root(Path(str(root)).expanduser())


def _check_root(path: Path) -> None:
    fix = "set ACME_TEST_CA_ROOT to a PEM certificate file (for Pebble: the CA of its HTTPS listener)"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("ACME_TEST_CA_ROOT", f"= {path} cannot be read ({exc.strerror})", fix) from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError("ACME_TEST_CA_ROOT", f"= {path} holds no PEM certificate", fix) from None


def test_ca_server(settings: AcmeChoice) -> str | None:
    """The test CA's directory URL when one is configured (validated), else None."""
    url = _choice(settings)[0]
    return None if is_le_staging(url) else url


def render_static_config(text: str, ca_server: str) -> str:
    """traefik.yml with its one caServer pointed at ca_server (the stack's file names staging)."""
    found = _CA_SERVER_LINE.findall(text)
    if len(found) != 1:
        raise ConfigError("ACME_CA_SERVER", f"cannot be applied: traefik.yml has {len(found)} caServer lines, not 1",
                          "keep exactly one certificatesResolvers ... acme.caServer line in stack/traefik/traefik.yml")
    return _CA_SERVER_LINE.sub(lambda m: f"{m.group('indent')}caServer: {ca_server}  # test CA (ACME_TEST_CA)", text)


def release_overlay(settings: AcmeChoice, stack_dir: Path) -> dict[str, bytes]:
    """Files that replace or join the stack's in the release: nothing for Let's Encrypt staging."""
    url = test_ca_server(settings)
    if url is None:
        return {}
    static = stack_dir / "traefik" / "traefik.yml"
    if not static.is_file():
        raise ConfigError("ACME_CA_SERVER", f"cannot be applied: {static} does not exist",
                          "keep the stack's traefik/traefik.yml in STACK_DIR (the test CA is written into a copy of it)")
    out = {"traefik/traefik.yml": render_static_config(static.read_text(encoding="utf-8"), url).encode()}
    root = _choice(settings)[2]
    if root:
        out[TEST_CA_RELEASE_PATH] = Path(str(root)).expanduser().read_bytes()
    return out


def stack_values(settings: AcmeChoice) -> dict[str, str]:
    """Stack variables the CA choice sets: lego trusts the test CA's listener only when given."""
    root = _choice(settings)[2] if test_ca_server(settings) else None
    return {"LEGO_CA_CERTIFICATES": TEST_CA_CONTAINER_PATH if root else ""}
