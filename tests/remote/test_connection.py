"""Connections to a real sshd: pinning, changed host key, wrong key, refused port, bad key files."""
from __future__ import annotations

import dataclasses
import os
import time

import pytest

from remote.connection import SshError, connect
from tests.remote.sshd import free_port, keygen


def test_first_contact_records_and_pins_the_host_key(target, sshd):
    assert not target.known_hosts_path.exists()
    c = connect(target)
    try:
        assert c.run("echo ok").stdout.strip() == "ok"
    finally:
        c.close()
    line = target.known_hosts_path.read_text().strip()
    host_pub = (sshd.host_key.with_suffix(".pub")).read_text().split()
    assert line == f"[127.0.0.1]:{sshd.port} {host_pub[0]} {host_pub[1]}"
    # second contact: same key accepted, nothing appended
    connect(target).close()
    assert target.known_hosts_path.read_text().strip() == line


def test_changed_host_key_is_refused_with_guidance(target, sshd):
    connect(target).close()
    recorded = target.known_hosts_path.read_text()
    sshd.restart(new_host_key=True)  # the droplet was rebuilt (or someone is in the middle)
    try:
        started = time.monotonic()
        with pytest.raises(SshError) as err:
            connect(target)
        assert time.monotonic() - started < 5  # no retries
        msg = str(err.value)
        assert f"127.0.0.1:{sshd.port}" in msg and str(target.known_hosts_path) in msg
        assert "changed" in msg
        assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {target.known_hosts_path}" in err.value.hint
        assert target.known_hosts_path.read_text() == recorded  # the pin is not overwritten
        # following the hint fixes it
        os.system(f"ssh-keygen -q -R '[127.0.0.1]:{sshd.port}' -f {target.known_hosts_path} >/dev/null 2>&1")
        connect(target).close()
    finally:
        pass


def test_refused_key_fails_fast_without_retry(target, tmp_path):
    wrong = keygen(tmp_path / "not_registered")
    t = dataclasses.replace(target, key_path=wrong, retries=5, backoff=2.0)
    started = time.monotonic()
    with pytest.raises(SshError) as err:
        connect(t)
    assert time.monotonic() - started < 3  # a retry would have slept 2 s
    msg = str(err.value)
    assert str(wrong) in msg and t.user in msg and "127.0.0.1" in msg
    assert f"register the public key {wrong}.pub for user {t.user}" in err.value.hint
    assert (tmp_path / "not_registered").read_text().splitlines()[1] not in msg  # no key material


def test_refused_port_is_retried_with_backoff_then_explained(target):
    t = dataclasses.replace(target, port=free_port(), retries=3, backoff=0.5)
    slept: list[float] = []
    with pytest.raises(SshError) as err:
        connect(t, sleep=slept.append)
    assert slept == [0.5, 1.0, 2.0]  # 4 attempts, doubling waits
    assert "after 4 attempt(s): connection refused" in str(err.value)
    assert "firewall" in err.value.hint


def test_refused_port_real_sleeps_are_bounded(target):
    t = dataclasses.replace(target, port=free_port(), retries=2, backoff=0.2)
    started = time.monotonic()
    with pytest.raises(SshError):
        connect(t)
    assert 0.5 <= time.monotonic() - started < 5


@pytest.mark.parametrize("case", ["missing", "public", "encrypted", "directory", "garbage"])
def test_unusable_key_files_name_the_setting(target, tmp_path, case):
    if case == "missing":
        key = tmp_path / "nope"
    elif case == "public":
        key = keygen(tmp_path / "k").with_suffix(".pub")
    elif case == "encrypted":
        key = tmp_path / "enc"
        os.system(f"ssh-keygen -q -t ed25519 -N 'pass phrase' -f {key}")
    elif case == "directory":
        key = tmp_path
    else:
        key = tmp_path / "garbage"
        key.write_bytes(os.urandom(300))
    with pytest.raises(SshError) as err:
        connect(dataclasses.replace(target, key_path=key))
    assert str(key) in str(err.value)
    assert "SSH_KEY_PATH" in err.value.hint or "chmod" in err.value.hint
    assert "Traceback" not in str(err.value)


def test_known_hosts_parent_folders_are_created(target, tmp_path):
    deep = tmp_path / "a" / "b" / "c" / "known_hosts"
    connect(dataclasses.replace(target, known_hosts_path=deep)).close()
    assert deep.is_file()
