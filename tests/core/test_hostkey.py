"""deploy.hostkey's forgetting of a destroyed stack: its pins and kept keys go, every other line stays."""
from __future__ import annotations

from pathlib import Path

from deploy import hostkey
from deploy.redact import SecretRegistry


def keep(known_hosts: Path, name: str) -> hostkey.HostKey:
    """A node's host key as provision leaves it: kept beside known_hosts."""
    key = hostkey.generate(SecretRegistry())
    hostkey.save_pending(key, known_hosts, name)
    hostkey.promote(known_hosts, name)
    return key


def test_a_stacks_pins_and_kept_keys_go_and_another_stacks_stay(tmp_path):
    kh = tmp_path / "known_hosts"
    shop, shop2, other = keep(kh, "shop"), keep(kh, "shop-2"), keep(kh, "shopping")
    hostkey.pin(kh, "203.0.113.5", shop.public)          # node 1, now
    hostkey.pin(kh, "[198.51.100.9]:2222", shop.public)  # node 1 before, by another address
    hostkey.pin(kh, "203.0.113.6", shop2.public)
    hostkey.pin(kh, "203.0.113.7", other.public)
    kh.write_text(kh.read_text() + "# the operator's comment\nhost-a,203.0.113.8 ssh-ed25519 AAAAkept\n")

    assert hostkey.kept_names(kh, "shop") == ["shop", "shop-2"]       # never "shopping"
    assert hostkey.pinned_with(kh, ["shop"]) == ["203.0.113.5", "[198.51.100.9]:2222"]

    removed = hostkey.forget(kh, {"203.0.113.8"}, ["shop", "shop-2"])
    assert "known_hosts 203.0.113.5" in removed and "known_hosts [198.51.100.9]:2222" in removed
    assert any(r.endswith("shop-2_ed25519.pub") for r in removed)
    text = kh.read_text()
    assert "203.0.113.5" not in text and "203.0.113.6" not in text and "198.51.100.9" not in text
    assert "203.0.113.7" in text and "# the operator's comment" in text
    assert "host-a ssh-ed25519 AAAAkept" in text                     # only the address left that line
    assert hostkey.load_public(kh, "shop") is None and hostkey.load_public(kh, "shopping") == other.public
    assert hostkey.forget(kh, {"203.0.113.5"}, ["shop"]) == []        # a second time: nothing left
    assert (kh.stat().st_mode & 0o777) == 0o600


def test_forgetting_without_a_known_hosts_file_is_nothing(tmp_path):
    assert hostkey.forget(tmp_path / "none", {"203.0.113.5"}, ["shop"]) == []
    assert hostkey.pinned_with(tmp_path / "none", ["shop"]) == [] and hostkey.kept_names(tmp_path / "none", "x") == []
