"""The lab services' own CAs (lab/services/labca.py), as Pebble and the registry use them."""
from __future__ import annotations

import stat

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from lab import config as labconfig
from lab.services import labca, pebble, registry


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_server_certificate_for_the_address_signed_by_a_ca_whose_key_is_nowhere(tmp_path):
    assert labca.ensure_server_tls(tmp_path / "tls", tmp_path / "ca.pem", "lab CA", "registry", "10.77.0.252")
    ca, leaf = load(tmp_path / "ca.pem"), load(tmp_path / "tls" / "cert.pem")
    leaf.verify_directly_issued_by(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.77.0.252"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE((tmp_path / "tls" / "key.pem").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["ca.pem", "cert.pem", "key.pem"]
    assert b"PRIVATE KEY" not in (tmp_path / "ca.pem").read_bytes()


def test_made_once_per_address(tmp_path):
    args = (tmp_path / "tls", tmp_path / "ca.pem", "lab CA", "registry")
    labca.ensure_server_tls(*args, "10.77.0.252")
    first = (tmp_path / "ca.pem").read_bytes()
    assert not labca.ensure_server_tls(*args, "10.77.0.252")
    assert (tmp_path / "ca.pem").read_bytes() == first
    assert labca.ensure_server_tls(*args, "10.78.0.252")           # another lab subnet: new ones
    assert (tmp_path / "ca.pem").read_bytes() != first
    assert labca.covers(tmp_path / "tls" / "cert.pem", "10.78.0.252")
    assert not labca.covers(tmp_path / "tls" / "cert.pem", "10.77.0.252")


def test_pebble_and_the_registry_each_have_their_own_ca_at_their_own_address(tmp_path):
    cfg = labconfig.LabConfig(subnet="10.77.0.0/24", state_dir=tmp_path / ".lab")
    tls = pebble.ensure_listener_tls(cfg) / "tls"
    assert pebble.ca_path(cfg) == tmp_path / ".lab" / "pebble" / "listener-ca.pem"
    load(tls / "cert.pem").verify_directly_issued_by(load(pebble.ca_path(cfg)))
    assert labca.covers(tls / "cert.pem", cfg.pebble_ip)
    assert isinstance(load(pebble.ca_path(cfg)).public_key(), ec.EllipticCurvePublicKey)
    labca.ensure_server_tls(registry.registry_dir(cfg) / "tls", registry.ca_path(cfg), f"{cfg.name} Pebble listener CA",
                            "registry", registry.address(cfg))   # even under the same CA name
    registry_cert = load(registry.registry_dir(cfg) / "tls" / "cert.pem")
    registry_cert.verify_directly_issued_by(load(registry.ca_path(cfg)))
    with pytest.raises(InvalidSignature):   # trusting Pebble's CA is no trust in the registry
        registry_cert.verify_directly_issued_by(load(pebble.ca_path(cfg)))


def test_more_dns_names_are_in_the_certificate_and_one_missing_makes_a_new_one(tmp_path):
    # The S3 endpoint names its address as a DNS name too, for pgBackRest 2.45 (lab/services/s3.py).
    args = (tmp_path / "tls", tmp_path / "ca.pem", "lab CA", "s3", "10.77.0.251")
    labca.ensure_server_tls(*args)
    assert not labca.covers(tmp_path / "tls" / "cert.pem", "10.77.0.251", dns_names=("10.77.0.251",))
    assert labca.ensure_server_tls(*args, dns_names=("10.77.0.251",))
    san = load(tmp_path / "tls" / "cert.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["s3", "10.77.0.251"]
    assert not labca.ensure_server_tls(*args, dns_names=("10.77.0.251",))
