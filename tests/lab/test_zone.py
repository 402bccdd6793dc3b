"""API records -> knot zone file text (pure; the server itself is exercised in test_dns_server)."""
from lab.services.zone import record_line, render_zone, zones_conf

NS = [{"type": "NS", "name": "@", "data": f"ns{i}.digitalocean.com", "ttl": 1800} for i in (1, 2, 3)]


def test_zone_has_a_synthesised_soa_and_every_record():
    records = [{"type": "SOA", "name": "@", "data": "1800", "ttl": 1800}, *NS,
               {"type": "A", "name": "@", "data": "10.0.0.5", "ttl": 60},
               {"type": "A", "name": "flower", "data": "10.0.0.5", "ttl": 60},
               {"type": "CNAME", "name": "www", "data": "@", "ttl": 300},
               {"type": "MX", "name": "@", "data": "mail.example.net", "priority": 10, "ttl": 300},
               {"type": "TXT", "name": "@", "data": 'v=spf1 "quoted" -all', "ttl": 300}]
    text = render_zone("app.lab.test", records, 42)
    lines = text.splitlines()
    assert lines[0] == "$ORIGIN app.lab.test."
    assert lines[2].split("\t")[3:] == ["SOA", "ns1.digitalocean.com. hostmaster.app.lab.test. 42 10800 3600 604800 1800"]
    assert sum("\tSOA\t" in line for line in lines) == 1
    assert "@\t60\tIN\tA\t10.0.0.5" in lines and "flower\t60\tIN\tA\t10.0.0.5" in lines
    assert "www\t300\tIN\tCNAME\t@" in lines
    assert "@\t300\tIN\tMX\t10 mail.example.net." in lines
    assert '@\t300\tIN\tTXT\t"v=spf1 \\"quoted\\" -all"' in lines
    assert [line for line in lines if "\tNS\t" in line][0].endswith("ns1.digitalocean.com.")


def test_long_txt_is_split_into_255_byte_strings():
    line = record_line({"type": "TXT", "name": "k", "data": "a" * 300, "ttl": 60})
    assert line.endswith('"' + "a" * 255 + '" "' + "a" * 45 + '"')


def test_zones_conf_lists_each_domain_with_its_file():
    assert zones_conf([]).startswith("#")
    conf = zones_conf(["b.test", "a.test"])
    assert conf.splitlines() == ["zone:", "  - domain: a.test", "    file: a.test.zone",
                                 "  - domain: b.test", "    file: b.test.zone"]
