"""Connections to a real sshd: pinning, changed host key, wrong key, refused port, bad key files."""
from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import threading
import time

import paramiko
import pytest

from lab.ports import free_port
from remote.connection import KeyRefused, SshError, SshEndpoint, connect, load_key
from remote.layout import ReleaseLayout
from remote.host import ConnectionLost, SshExecutor, Host
from tests.remote.sshd import keygen, pin


def test_a_pinned_host_key_is_accepted_and_the_file_left_alone(target, sshd):
    line = target.known_hosts_path.read_text().strip()
    assert stat.S_IMODE(target.known_hosts_path.stat().st_mode) == 0o600
    host_pub = (sshd.host_key.with_suffix(".pub")).read_text().split()
    assert line == f"[127.0.0.1]:{sshd.port} {host_pub[0]} {host_pub[1]}"
    c = connect(target)
    try:
        assert c.run("echo ok").stdout.strip() == "ok"
    finally:
        c.close()
    assert target.known_hosts_path.read_text().strip() == line


def test_first_contact_with_an_unpinned_host_is_refused_not_trusted(target, sshd, tmp_path):
    """No trust on first use: an empty known_hosts means refusal, naming the fix."""
    t = dataclasses.replace(target, known_hosts_path=tmp_path / "empty" / "known_hosts", retries=3, backoff=2.0)
    started = time.monotonic()
    with pytest.raises(SshError) as err:
        connect(t)
    assert time.monotonic() - started < 5  # no retries
    host_key = paramiko.PKey.from_path(sshd.host_key)
    assert "not pinned" in str(err.value) and host_key.fingerprint in str(err.value)
    assert "inv deploy" in err.value.hint and str(t.known_hosts_path) in err.value.hint
    assert f"[127.0.0.1]:{sshd.port} <type> <base64 key>" in err.value.hint
    assert not t.known_hosts_path.exists()  # nothing was recorded
    pin(sshd, t.known_hosts_path)           # following the hint fixes it
    connect(t).close()


def test_a_host_showing_another_key_type_than_pinned_is_refused(target, sshd, tmp_path):
    from deploy import hostkey
    t = dataclasses.replace(target, known_hosts_path=tmp_path / "kh")
    other = keygen(tmp_path / "other_host")  # an ed25519 key the server does not have
    hostkey.pin(t.known_hosts_path, f"[127.0.0.1]:{sshd.port}", other.with_suffix(".pub").read_text())
    with pytest.raises(SshError) as err:
        connect(t)
    assert "changed" in str(err.value) or "not pinned" in str(err.value)


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
        # following the hint fixes it: the stale entry removed, the new key pinned
        os.system(f"ssh-keygen -q -R '[127.0.0.1]:{sshd.port}' -f {target.known_hosts_path} >/dev/null 2>&1")
        pin(sshd, target.known_hosts_path)
        connect(target).close()
    finally:
        pass


def test_refused_key_fails_fast_without_retry(target, tmp_path):
    wrong = keygen(tmp_path / "not_registered")
    t = dataclasses.replace(target, key_path=wrong, retries=5, backoff=2.0)
    started = time.monotonic()
    with pytest.raises(KeyRefused) as err:   # told apart from an unreachable host (inv rotate-ssh-key)
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
    assert not isinstance(err.value, KeyRefused)
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


def test_pinning_creates_the_known_hosts_folders_owner_only(sshd, tmp_path):
    deep = tmp_path / "a" / "b" / "c" / "known_hosts"
    pin(sshd, deep)
    assert deep.is_file() and stat.S_IMODE(deep.parent.stat().st_mode) == 0o700


# --- issue 12 (NFR-004): local key and known_hosts permissions (no sshd needed) ----------------

@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_readable_by_group_or_others_is_refused_with_the_chmod_fix(tmp_path, mode):
    key = keygen(tmp_path / "id_ed25519")
    key.chmod(mode)
    with pytest.raises(SshError) as err:
        load_key(SshEndpoint(host="127.0.0.1", user="deploy", key_path=key))
    assert str(key) in str(err.value) and oct(mode)[2:] in str(err.value)
    assert f"chmod 600 {key}" in err.value.hint and "SSH_KEY_PATH" in err.value.hint


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_key_only_its_owner_reads_is_used(tmp_path, mode):
    key = keygen(tmp_path / "id_ed25519")
    key.chmod(mode)
    assert load_key(SshEndpoint(host="127.0.0.1", user="deploy", key_path=key)).get_name() == "ssh-ed25519"


@pytest.mark.parametrize("existing_mode", [None, 0o644])
def test_known_hosts_is_written_owner_only_and_a_repin_replaces_the_entry(tmp_path, existing_mode):
    from deploy import hostkey
    path = tmp_path / "state" / "known_hosts"
    if existing_mode is not None:
        path.parent.mkdir()
        other = paramiko.PKey.from_path(keygen(tmp_path / "other"))
        path.write_text(f"10.0.0.9 ssh-ed25519 {other.get_base64()}\n")
        path.chmod(existing_mode)
    old, new = (paramiko.PKey.from_path(keygen(tmp_path / n)) for n in ("old", "new"))
    hostkey.pin(path, "[127.0.0.1]:2222", f"ssh-ed25519 {old.get_base64()}")
    hostkey.pin(path, "[127.0.0.1]:2222", f"ssh-ed25519 {new.get_base64()} comment")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[-1] == f"[127.0.0.1]:2222 ssh-ed25519 {new.get_base64()}"
    assert old.get_base64() not in path.read_text()   # a reused address keeps one key, the new one
    assert len(lines) == (1 if existing_mode is None else 2)


def test_a_session_killed_under_a_command_is_a_lost_connection_not_a_failed_command(sshd, target, tmp_path):
    """A droplet rebooting (or its sshd killed) ends the channel without an exit status: Fabric
    reports exit -1. That is a lost connection with its fix, not "<command> failed" with a hint
    about disk space, and the next command reconnects."""
    conn = connect(target)
    host = Host(name="sshd", host=conn.host, layout=ReleaseLayout(str(tmp_path / "base")),
                  connector=lambda quick: SshExecutor(conn)).open()
    try:
        def kill_the_session() -> None:
            time.sleep(1)       # the command is running: its session's sshd is a child of the listener
            subprocess.run(["pkill", "-KILL", "-P", str(sshd.proc.pid)], check=True)
        killer = threading.Thread(target=kill_the_session)
        killer.start()
        with pytest.raises(ConnectionLost) as lost:
            host.run("sleep 20", "waiting")
        killer.join()
        assert "dropped while waiting" in lost.value.message and "run the same command again" in lost.value.hint
        assert host.run("echo back").stdout.strip() == "back"       # the next command reconnects
    finally:
        host.close()


def test_a_session_killed_under_an_unchecked_command_is_a_lost_connection_not_an_empty_answer(sshd, target, tmp_path):
    """check=False returns the command's own answer, whatever its exit status; a session killed
    under it gave none. Returned as a Result (exit -1, no output), the cutover's health poll read
    it as a container "gone", removed the new container and blamed the service (found by the e2e
    test_ssh_dropped_mid_cutover once the drop landed under that poll)."""
    conn = connect(target)
    host = Host(name="sshd", host=conn.host, layout=ReleaseLayout(str(tmp_path / "base")),
                connector=lambda quick: SshExecutor(conn)).open()
    try:
        killer = threading.Timer(1, lambda: subprocess.run(["pkill", "-KILL", "-P", str(sshd.proc.pid)], check=True))
        killer.start()
        with pytest.raises(ConnectionLost) as lost:
            host.run("sleep 20; echo running healthy", "polling the health", check=False)
        killer.join()
        assert "dropped while polling the health" in lost.value.message
        assert host.run("echo back", check=False).stdout.strip() == "back"
    finally:
        host.close()


def test_a_connection_that_stops_answering_fails_the_next_command_within_the_channel_deadline(sshd, target, tmp_path):
    """The session's sshd frozen (a hung droplet, a network gone without a reset): the TCP
    connection stays open and nothing answers. Opening the next command's channel used to wait
    paramiko's default hour (invoke's timeout only starts once the channel is open); now it gives
    up after the endpoint's channel_timeout with a lost connection, and the next command connects
    afresh."""
    conn = connect(dataclasses.replace(target, channel_timeout=2))
    host = Host(name="sshd", host=conn.host, layout=ReleaseLayout(str(tmp_path / "base")),
                connector=lambda quick: SshExecutor(conn)).open()
    sessions = subprocess.run(["pgrep", "-P", str(sshd.proc.pid)], capture_output=True, text=True).stdout.split()
    outcome: list[BaseException | str] = []

    def next_command() -> None:
        try:
            outcome.append(host.run("echo answered", "checking", timeout=5).stdout.strip())
        except BaseException as exc:  # noqa: BLE001 - asserted below
            outcome.append(exc)

    try:
        subprocess.run(["kill", "-STOP", *sessions], check=True)
        started = time.monotonic()
        waiting = threading.Thread(target=next_command, daemon=True)
        waiting.start()
        waiting.join(20)
        assert not waiting.is_alive(), "the command still waits on a connection that does not answer"
        assert time.monotonic() - started < 10
        [lost] = outcome
        assert isinstance(lost, ConnectionLost), lost
        assert "dropped while checking" in lost.message and "run the same command again" in lost.hint
    finally:
        subprocess.run(["kill", "-KILL", *sessions], check=False)
    try:
        assert host.run("echo back").stdout.strip() == "back"       # a new connection, not the frozen one
    finally:
        host.close()


def test_commands_beyond_sshds_sessions_wait_for_a_free_channel_instead_of_failing(tmp_path):
    """sshd refuses a connection's channels beyond MaxSessions ("Connect failed"); the command
    never started, so it is opened again once a session is free (CI's lab: collect lost items)."""
    import threading
    from remote.host import SshExecutor
    from tests.remote.sshd import make_sshd, pin
    server = make_sshd(tmp_path / "sshd", max_sessions=2)
    try:
        endpoint = SshEndpoint(host="127.0.0.1", user=server.user, key_path=server.user_key, port=server.port,
                               known_hosts_path=pin(server, tmp_path / "known_hosts"), connect_timeout=5,
                               retries=2, backoff=0.1)
        executor = SshExecutor(connect(endpoint))
        results = []
        threads = [threading.Thread(target=lambda: results.append(executor.run("sleep 0.3; echo ok")))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        executor.close()
        assert [(r.exited, r.stdout.strip()) for r in results] == [(0, "ok")] * 6
    finally:
        server.stop()
