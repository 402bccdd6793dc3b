"""Releases over a real sshd: full push, delta push, .env, retention, switch/rollback."""
from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from core.errors import ConfigError
from remote import sync
from remote.errors import RemoteError
from remote.layout import RELEASE_STACK, ReleaseLayout
from remote.sync import ReleaseError
from remote.host import SshExecutor
from tests.remote.stackfixture import make_stack

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    return make_stack(tmp_path / "stack")


def push(host, stack: Path, now: datetime | None = None, env: str = "A=1\n") -> sync.PushResult:
    return sync.push(host, sync.LocalRelease.read(stack, now=now), env)


def rel(base: str, rid: str) -> Path:
    return Path(base) / "releases" / rid


def test_first_push_uploads_everything_but_ignored_files(host, base, stack):
    res = push(host, stack, now=T0)
    assert res.release_id.startswith("20250102T030405000Z-")
    assert res.previous_release is None and res.removed == []
    assert "web/static/bundle.bin" in res.changed and res.files_total == len(res.changed) == 8
    assert res.bytes_sent > 256 * 1024
    shipped = rel(base, res.release_id)
    assert (shipped / "api" / "main.py").read_text() == "print('v1')\n"
    assert stat.S_IMODE((shipped / "api" / "run.sh").stat().st_mode) == 0o555     # published read-only
    for never in ("web/node_modules", "api/__pycache__"):
        assert not (shipped / never).exists(), never
    assert (shipped / ".env").read_text() == "A=1\n"      # the env given to push, not the local .env
    assert res.changed_services == {"api", "web"}
    # push does not activate; switch does
    assert not (Path(base) / "current").exists()
    assert sync.switch(host, res.release_id) == res.release_id
    assert os.readlink(Path(base) / "current") == f"releases/{res.release_id}"


def test_delta_push_sends_only_the_change_and_hardlinks_the_rest(host, base, stack):
    first = push(host, stack, now=T0)
    sync.switch(host, first.release_id)
    (stack / "api" / "main.py").write_text("print('v2')\n")
    (stack / "api" / "new.py").write_text("x = 1\n")
    (stack / "obsolete.txt").unlink()

    second = push(host, stack, now=T0 + timedelta(minutes=1))

    assert second.previous_release == first.release_id
    assert second.changed == ["api/main.py", "api/new.py"]
    assert second.removed == ["obsolete.txt"]
    assert second.changed_services == {"api"}
    assert second.bytes_sent * 20 < first.bytes_sent, (second.bytes_sent, first.bytes_sent)
    old, new = rel(base, first.release_id), rel(base, second.release_id)
    # unchanged files share the inode with the previous release
    assert (old / "web/static/bundle.bin").stat().st_ino == (new / "web/static/bundle.bin").stat().st_ino
    # changed files do not, and the previous release kept its own content
    assert (new / "api/main.py").read_text() == "print('v2')\n"
    assert (old / "api/main.py").read_text() == "print('v1')\n"
    assert not (new / "obsolete.txt").exists() and (old / "obsolete.txt").exists()
    assert sync.read_release_meta(host, first.release_id)["id"] == first.release_id


def test_mode_only_change_is_shipped_without_touching_the_old_release(host, base, stack):
    first = push(host, stack, now=T0)
    sync.switch(host, first.release_id)
    os.chmod(stack / "api" / "main.py", 0o750)
    second = push(host, stack, now=T0 + timedelta(minutes=1))
    assert second.changed == ["api/main.py"]
    assert stat.S_IMODE((rel(base, second.release_id) / "api/main.py").stat().st_mode) == 0o550
    assert stat.S_IMODE((rel(base, first.release_id) / "api/main.py").stat().st_mode) == 0o444


def test_each_release_keeps_its_own_private_env_never_on_a_command_line(host, base, stack, commands_run):
    secret = "s3cr3t-'quote\"-$(reboot)-" + os.urandom(8).hex()
    content = f"POSTGRES_PASSWORD={secret}\nDJANGO_SECRET_KEY=k-{secret}\n"
    first = push(host, stack, now=T0, env=content)
    path = rel(base, first.release_id) / ".env"
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o400 and st.st_uid == os.getuid()
    assert path.read_text() == content
    # the next release gets its own copy; the first one's snapshot is untouched (rollback needs it)
    second = push(host, stack, now=T0 + timedelta(minutes=1), env="A=1\n")
    assert (rel(base, second.release_id) / ".env").read_text() == "A=1\n"
    assert stat.S_IMODE((rel(base, second.release_id) / ".env").stat().st_mode) == 0o400
    assert path.read_text() == content
    assert not [p for p in os.listdir(rel(base, second.release_id)) if ".tmp-" in p]
    assert commands_run, "no command recorded: the recorder is not wired"
    assert not any(secret in c for c in commands_run)


def test_list_switch_rollback_and_outcomes(host, base, stack):
    ids = []
    for i in range(3):
        (stack / "api" / "main.py").write_text(f"print({i})\n")
        r = push(host, stack, now=T0 + timedelta(minutes=i))
        sync.switch(host, r.release_id)
        ids.append(r.release_id)
    sync.record_outcome(host, ids[1], "success")
    sync.record_outcome(host, ids[2], "failed")

    listed = sync.list_releases(host)
    assert [r.id for r in listed] == ids
    assert [r.current for r in listed] == [False, False, True]
    assert [r.outcome for r in listed] == [None, "success", "failed"]
    assert all(r.created for r in listed)

    assert sync.switch(host) == ids[1]            # rollback: the one before current
    assert sync.current_release(host) == ids[1]
    assert sync.switch(host) == ids[0]
    with pytest.raises(ReleaseError, match="no release older than"):
        sync.switch(host)
    assert sync.switch(host, ids[2]) == ids[2]    # roll forward by name
    with pytest.raises(ReleaseError) as err:
        sync.switch(host, "20990101T000000Z-deadbeef")
    assert "does not exist" in str(err.value) and ids[2] in str(err.value)
    assert sync.current_release(host) == ids[2]   # a failed switch changes nothing


def test_retention_keeps_newest_current_and_previous(host, base, stack):
    ids = []
    for i in range(6):
        (stack / "api" / "main.py").write_text(f"print({i})\n")
        ids.append(push(host, stack, now=T0 + timedelta(minutes=i)).release_id)
    sync.switch(host, ids[2])                     # rolled back to an older one
    removed = sync.prune(host, keep=2)
    assert removed == [ids[0], ids[3]]
    assert sync.release_ids(host) == [ids[1], ids[2], ids[4], ids[5]]
    assert (Path(base) / "current" / "api" / "main.py").read_text() == "print(2)\n"


def test_push_after_pruned_history_and_bad_input(host, base, stack, tmp_path):
    with pytest.raises(ConfigError, match="REMOTE_BASE_DIR is 'opt/x', which is not an absolute path"):
        ReleaseLayout("opt/x")
    with pytest.raises(ReleaseError, match="stack folder .* does not exist"):
        push(host, tmp_path / "missing")
    r = push(host, stack, now=T0)
    sync.switch(host, r.release_id)
    # same content again in the same second: a distinct id, nothing uploaded but metadata
    again = push(host, stack, now=T0)
    assert again.release_id != r.release_id and again.changed == []
    assert sorted(os.listdir(rel(base, again.release_id))) == sorted(os.listdir(rel(base, r.release_id)))


def test_leftovers_of_an_interrupted_push_are_removed_by_the_next_one(host, base, stack):
    first = push(host, stack, now=T0)
    releases = Path(base) / "releases"
    (releases / ".staging-20250101T000000000Z-dead").mkdir()        # a push that died mid-way
    (releases / ".staging-20250101T000000000Z-dead" / "big.bin").write_bytes(b"x" * 1024)
    (releases / ".upload-20250101T000000000Z-dead.tar.gz").write_bytes(b"partial")
    second = push(host, stack, now=T0 + timedelta(minutes=1))
    assert sorted(p.name for p in releases.iterdir()) == sorted([first.release_id, second.release_id])


def test_an_sftp_write_into_a_missing_folder_is_a_remote_error_naming_the_path(host, base):
    missing = f"{base}/no-such-folder/file.txt"
    with pytest.raises(RemoteError) as err:
        host.put(missing, b"data")
    assert missing in err.value.message and host.host in err.value.message
    assert "df -h" in err.value.hint


def _connection(sftp, connected: bool = True) -> SimpleNamespace:
    """What SshExecutor uses of a Fabric connection: its state, its transport, its SFTP."""
    return SimpleNamespace(host="203.0.113.10", is_connected=connected, transport=object(), open=lambda: None,
                           client=SimpleNamespace(open_sftp=lambda: sftp))


class _RecordingSftp:
    """An SFTP client on a live connection: writes land (tmp name, then rename)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.written: dict[str, bytes] = {}

    def open(self, path: str, mode: str) -> "_RecordingSftp":
        self._path, self._data = path, b""
        return self

    def __enter__(self) -> "_RecordingSftp":
        return self

    def __exit__(self, *exc: object) -> None:
        self.files[self._path] = self._data

    def chmod(self, mode: int) -> None:
        pass

    def set_pipelined(self, on: bool) -> None:
        pass

    def write(self, data: bytes) -> None:
        self._data += data

    def posix_rename(self, src: str, dst: str) -> None:
        self.written[dst] = self.files.pop(src)


class _FullDiskSftp:
    """What paramiko does when the droplet's disk fills up: a bare OSError('Failure')."""

    def __init__(self) -> None:
        self.removed: list[str] = []

    def open(self, path: str, mode: str) -> "_FullDiskSftp":
        self.opened = path
        return self

    def __enter__(self) -> "_FullDiskSftp":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def chmod(self, mode: int) -> None:
        return None

    def set_pipelined(self, flag: bool) -> None:
        return None

    def write(self, data: bytes) -> None:
        raise OSError("Failure")

    def remove(self, path: str) -> None:
        self.removed.append(path)

    def posix_rename(self, src: str, dest: str) -> None:
        raise AssertionError("a failed write must not be renamed into place")


def test_a_full_disk_during_an_upload_says_so_and_leaves_no_temp_file():
    sftp = _FullDiskSftp()
    executor = SshExecutor(_connection(sftp))
    path = "/opt/app/releases/.upload-r1.tar.gz"
    with pytest.raises(RemoteError) as err:
        executor.put(path, b"archive")
    message = str(err.value)
    assert f"writing {path} on 203.0.113.10 failed" in message and "Failure" in message
    assert "disk" in err.value.hint and "df -h /opt/app/releases" in err.value.hint
    assert sftp.removed == [sftp.opened]          # the half-written temp file is gone


def test_an_overlay_replaces_a_stack_file_and_adds_one_and_counts_in_the_release(host, base, stack):
    first = push(host, stack, now=T0)
    sync.switch(host, first.release_id)
    overlay = {"api/main.py": b"print('rendered')\n", "extra/ca.pem": b"-----BEGIN CERTIFICATE-----\n"}
    local = sync.LocalRelease.read(stack, now=T0 + timedelta(minutes=1), overlay=overlay)
    assert local.release_id.split("-")[-1] != first.release_id.split("-")[-1]  # the id covers the overlay
    second = sync.push(host, local, "A=1\n")
    assert second.changed == ["api/main.py", "extra/ca.pem"]
    new = rel(base, second.release_id)
    assert (new / "api/main.py").read_text() == "print('rendered')\n"
    assert (new / "extra/ca.pem").read_bytes() == overlay["extra/ca.pem"]
    assert (stack / "api/main.py").read_text() == "print('v1')\n"  # the local stack is untouched
    assert sync.drift(host, second.release_id, local.manifest).paths == []


def test_the_stack_file_a_swarm_deploy_writes_into_its_release_is_not_drift(host, base, stack):
    """A NODES > 1 deploy writes stack.yml into the release it runs: the deployer's own file, like
    .env, so the next push neither warns about it nor strips it."""
    first = push(host, stack, now=T0)
    sync.switch(host, first.release_id)
    (rel(base, first.release_id) / RELEASE_STACK).write_text("version: '3.9'\n")
    local = sync.LocalRelease.read(stack, now=T0 + timedelta(minutes=1))
    assert sync.drift(host, first.release_id, local.manifest).paths == []
    second = sync.push(host, local, "A=1\n")
    assert second.drift.paths == [] and second.removed == []


def test_a_connection_dropped_during_an_upload_is_a_dropped_connection_not_a_full_disk():
    """paramiko reports a transport that died mid-write as a plain OSError ('Socket is closed'):
    the lab's fault test once got the disk-full hint for it instead of 'run the same command again'."""
    sftp = _FullDiskSftp()
    sftp.write = lambda data: (_ for _ in ()).throw(OSError("Socket is closed"))
    executor = SshExecutor(_connection(sftp, connected=False))
    with pytest.raises(ConnectionError):
        executor.put("/opt/app/releases/.upload.tar.gz", b"archive")


def test_an_upload_after_fabric_reconnected_uses_an_sftp_client_on_the_new_connection():
    """Seen on the lab ('SSH dropped mid-cutover'): the droplet's sshd session was killed between
    two commands; the next command reconnected (Fabric opens a new transport by itself) and the
    cutover finished, but the release record's upload went through the SFTP client of the dead
    transport ('Socket is closed', reported as a full disk). Each transport gets its own client."""
    first, second = _RecordingSftp(), _RecordingSftp()
    opened = iter([first, second])
    conn = SimpleNamespace(host="203.0.113.10", is_connected=True, transport=object(), open=lambda: None,
                           client=SimpleNamespace(open_sftp=lambda: next(opened)))
    conn.sftp = lambda: first      # Fabric's own cache keeps the first client, whatever happens
    executor = SshExecutor(conn)
    executor.put("/opt/app/releases/r1/.env", b"A=1\n")
    first.write = lambda data: (_ for _ in ()).throw(OSError("Socket is closed"))   # its transport died
    conn.transport = object()      # ... and a command has reconnected since
    executor.put("/opt/app/releases/r1/.release.json", b'{"outcome": "success"}')
    assert first.written == {"/opt/app/releases/r1/.env": b"A=1\n"}
    assert second.written == {"/opt/app/releases/r1/.release.json": b'{"outcome": "success"}'}


def test_the_servers_password_files_are_written_beside_the_env_closed_to_others_and_are_not_drift(
        host, base, stack, commands_run):
    """PostgreSQL and Redis read their passwords from .secrets/ in the release (remote/stack_secrets.py):
    written over sftp only, the folder closed to other users, each release with its own copy
    (a rollback takes the older passwords back), and never in the manifest or the drift."""
    env = ("POSTGRES_PASSWORD=su-" + os.urandom(6).hex() + "\nPOSTGRES_APP_USER=app\n"
           "POSTGRES_APP_PASSWORD=app-" + os.urandom(6).hex() + "\nREDIS_PASSWORD=r-" + os.urandom(6).hex() + "\n")
    values = dict(line.split("=", 1) for line in env.splitlines())
    first = push(host, stack, now=T0, env=env)
    folder = rel(base, first.release_id) / ".secrets"
    assert (folder / "postgres" / "passwords").read_text() == (
        f"{values['POSTGRES_PASSWORD']}\napp\n{values['POSTGRES_APP_PASSWORD']}\n")
    assert (folder / "redis" / "password").read_text() == values["REDIS_PASSWORD"] + "\n"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "redis").stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "redis" / "password").stat().st_mode) == 0o444
    sync.switch(host, first.release_id)
    local = sync.LocalRelease.read(stack, now=T0 + timedelta(minutes=1))
    assert not [p for p in local.manifest if ".secrets" in p]
    assert sync.drift(host, first.release_id, local.manifest).paths == []
    second = push(host, stack, now=T0 + timedelta(minutes=1),
                  env=env.replace(values["REDIS_PASSWORD"], "r-rotated-" + os.urandom(6).hex()))
    assert second.drift.paths == [] and second.removed == []
    assert (folder / "redis" / "password").read_text() == values["REDIS_PASSWORD"] + "\n"   # the first's, kept
    assert (rel(base, second.release_id) / ".secrets" / "redis" / "password").read_text().startswith("r-rotated-")
    assert not any(v in c for c in commands_run for v in values.values() if v != "app")
