"""DNS_RESOLVER parsing: name servers with optional ports, `system`, and clear errors."""
import pytest

from core.errors import ConfigError
from deploy.resolvers import NameServer, parse
from tests.core.test_settings import load


def test_entries_and_ports():
    assert parse(["ns1.digitalocean.com", "10.77.0.254", "192.0.2.1:5353", "[2001:db8::1]:53", "2001:db8::2"]) == (
        NameServer("ns1.digitalocean.com"), NameServer("10.77.0.254"), NameServer("192.0.2.1", 5353),
        NameServer("2001:db8::1"), NameServer("2001:db8::2"))
    assert str(NameServer("192.0.2.1", 5353)) == "192.0.2.1:5353" and str(NameServer("2001:db8::1", 54)) == "[2001:db8::1]:54"


@pytest.mark.parametrize("entries", [[], ["system"], ["  "], ["SYSTEM"]])
def test_system_resolver(entries):
    assert parse(entries) == ()


@pytest.mark.parametrize("entries, fragment", [
    (["http://ns1.example.com"], "neither an IP address nor a host name"),
    (["192.0.2.1:0"], "no valid port"),
    (["192.0.2.1:http"], "no valid port"),
    (["999.1.1.1"], "neither"),
    (["system", "192.0.2.1"], "mixes"),
])
def test_bad_entries_name_the_setting_and_the_fix(entries, fragment):
    with pytest.raises(ConfigError) as err:
        parse(entries)
    assert err.value.key == "DNS_RESOLVER" and fragment in str(err.value) and "set DNS_RESOLVER" in str(err.value)


def test_settings_validate_dns_resolver(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, environ={"DNS_RESOLVER": "ns1.example.com,bad_name!"})
    assert err.value.key == "DNS_RESOLVER"
    assert load(tmp_path, environ={"DNS_RESOLVER": "10.0.0.53"}).dns_resolver == ("10.0.0.53",)
