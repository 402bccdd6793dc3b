"""Connections to a real sshd: pinning, changed host key, wrong key, refused port, bad key files."""
from __future__ import annotations

import dataclasses
import os
import stat
import time

import paramiko
import pytest

from remote.connection import SshError, SshTarget, _PinOnFirstUse, connect, load_key
from tests.remote.sshd import free_port, keygen


def test_first_contact_records_and_pins_the_host_key(target, sshd):
    assert not target.known_hosts_path.exists()
    c = connect(target)
    try:
        assert c.run("echo ok").stdout.strip() == "ok"
    finally:
        c.close()
    line = target.known_hosts_path.read_text().strip()
    assert stat.S_IMODE(target.known_hosts_path.stat().st_mode) == 0o600
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


# --- issue 12 (NFR-004): local key and known_hosts permissions (no sshd needed) ----------------

@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_readable_by_group_or_others_is_refused_with_the_chmod_fix(tmp_path, mode):
    key = keygen(tmp_path / "id_ed25519")
    key.chmod(mode)
    with pytest.raises(SshError) as err:
        load_key(SshTarget(host="127.0.0.1", user="deploy", key_path=key))
    assert str(key) in str(err.value) and oct(mode)[2:] in str(err.value)
    assert f"chmod 600 {key}" in err.value.hint and "SSH_KEY_PATH" in err.value.hint


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_key_only_its_owner_reads_is_used(tmp_path, mode):
    key = keygen(tmp_path / "id_ed25519")
    key.chmod(mode)
    assert load_key(SshTarget(host="127.0.0.1", user="deploy", key_path=key)).get_name() == "ssh-ed25519"


@pytest.mark.parametrize("existing_mode", [None, 0o644])
def test_known_hosts_is_written_owner_only(tmp_path, existing_mode):
    path = tmp_path / "state" / "known_hosts"
    if existing_mode is not None:
        path.parent.mkdir()
        path.write_text("")
        path.chmod(existing_mode)
    host_key = paramiko.PKey.from_path(keygen(tmp_path / "host"))
    client = paramiko.SSHClient()
    _PinOnFirstUse(path).missing_host_key(client, "[127.0.0.1]:2222", host_key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"[127.0.0.1]:2222 ssh-ed25519 {host_key.get_base64()}\n"
    if existing_mode is None:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # a folder we made: owner only
