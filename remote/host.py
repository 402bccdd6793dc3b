"""A Host is one droplet: its name and address, its release layout, and the one way to run a
command on it (``run``) or to write a file (``put``). Every droplet-side module (sync, lock,
compose, collect) talks to the droplet through a Host and nothing else.

Two more ways serve the day-2 tasks: ``stream`` hands a long-running command's output over line
by line without keeping it (`inv logs --follow`), and ``interactive`` attaches a command to this
terminal (`inv exec`, `inv shell`).

The executor underneath is SSH (``SshExecutor``, a Fabric connection) in production; tests
may give a Host any object with the same methods.
"""
from __future__ import annotations

import codecs
import collections
import contextlib
import posixpath
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator, Protocol

import fabric
import paramiko
from invoke.exceptions import CommandTimedOut

from remote.errors import RemoteError
from remote.layout import ReleaseLayout

DEFAULT_HINT = "check the deploy user can write the base folder and the droplet's disk is not full"


@dataclass(frozen=True)
class Result:
    command: str
    exited: int | None      # None: the command timed out
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def tail(self, lines: int = 1, chars: int = 300) -> str:
        """The last lines of stderr (else stdout): what an error message should quote."""
        text = (self.stderr.strip() or self.stdout.strip())
        if not text:
            return "timed out" if self.exited is None else f"exit status {self.exited}"
        return "\n".join(text.splitlines()[-lines:])[-chars:]


class RemoteCommandError(RemoteError):
    """A command on the droplet failed; ``result`` keeps its output for diagnostics."""

    def __init__(self, message: str, hint: str, result: Result) -> None:
        super().__init__(message, hint)
        self.result = result


class ConnectionLost(RemoteError):
    """The SSH connection dropped under a command or an upload (network, reboot, sshd gone)."""


# What paramiko raises once its transport is gone ("SSH session not active", "Server connection
# dropped"), and the socket errors under it.
# Fabric's exit code for a channel closed without an exit status: the session died under the
# command (sshd killed, the droplet rebooting), which is no answer from the command at all.
SESSION_ENDED = -1
# A reconnect that finds nothing listening (the droplet rebooting) is NoValidConnectionsError.
_DROPPED = (paramiko.SSHException, EOFError, ConnectionError, paramiko.ssh_exception.NoValidConnectionsError,
            TimeoutError)


# What a streamed command's Result keeps of its output: the tail an error message quotes.
STREAM_TAIL_LINES = 20
# A terminal as wide as a log line may be: the remote side of a pty must not cut lines.
PTY_WIDTH = 1000


class Executor(Protocol):
    host: str

    def run(self, command: str, timeout: float | None = None) -> Result: ...

    def put(self, path: str, data: bytes, mode: int | None = None) -> None: ...

    def stream(self, command: str, on_line: Callable[[str], None], pty: bool = False) -> Result: ...

    def interactive(self, command: str, pty: bool, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> int | None: ...

    def close(self) -> None: ...


class LineSplitter:
    """Bytes as they arrive -> whole lines (UTF-8, a broken sequence replaced), each handed to
    ``on_line`` without its line end; the last ``keep`` lines are kept for an error message."""

    def __init__(self, on_line: Callable[[str], None], keep: int = STREAM_TAIL_LINES,
                 tail: collections.deque[str] | None = None) -> None:
        self._on_line = on_line
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""
        self.tail: collections.deque[str] = collections.deque(maxlen=keep) if tail is None else tail

    def feed(self, data: bytes) -> None:
        self._pending += self._decoder.decode(data)
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._emit(line)

    def close(self) -> None:
        self._pending += self._decoder.decode(b"", final=True)
        if self._pending:
            self._emit(self._pending)
            self._pending = ""

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")     # a pty ends its lines with \r\n
        self.tail.append(line)
        self._on_line(line)


class SshExecutor:
    """Commands over one Fabric connection; files over its SFTP channel."""

    def __init__(self, conn: fabric.Connection) -> None:
        self.conn = conn
        self.host = conn.host
        self._sftp: Any = None
        self._sftp_transport: Any = None

    def run(self, command: str, timeout: float | None = None) -> Result:
        for attempt in range(CHANNEL_RETRIES + 1):
            try:
                res = self.conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
            except CommandTimedOut as exc:
                res = exc.result
                return Result(command, None, res.stdout or "", res.stderr or "")
            except paramiko.SSHException as exc:
                # sshd refused the channel (its sessions are all taken): the command never
                # started, so it is tried again once one is free
                if attempt == CHANNEL_RETRIES or not self._refused_channel(exc):
                    raise
                time.sleep(CHANNEL_RETRY_SECONDS * (attempt + 1))
                continue
            return Result(command, res.exited, res.stdout or "", res.stderr or "")
        raise AssertionError("unreachable")

    def _refused_channel(self, exc: paramiko.SSHException) -> bool:
        """A channel the server would not open, on a connection that is still up. Paramiko says
        ChannelException, or, when threads open channels at once and one takes another's
        refusal, only "Unable to open channel." while the transport stays active."""
        if isinstance(exc, paramiko.ChannelException):
            return True
        transport = getattr(self.conn, "transport", None)
        return str(exc) == "Unable to open channel." and bool(transport and transport.is_active())

    def _client(self) -> Any:
        """An SFTP client on the connection's live transport. A command reconnects by itself
        after a drop (Fabric opens a new transport), but an SFTP client stays bound to the
        transport it was opened on, and Fabric's own cache keeps it: open one per transport."""
        if not self.conn.is_connected:
            self.conn.open()
        if self._sftp is None or self._sftp_transport is not self.conn.transport:
            self._sftp = self.conn.client.open_sftp()
            self._sftp_transport = self.conn.transport
        return self._sftp

    def put(self, path: str, data: bytes, mode: int | None = None) -> None:
        """Write via a temp name + rename: readers never see half a file, and a file that is
        hard-linked into an older release is replaced, never rewritten through its inode."""
        sftp = self._client()
        tmp = f"{path}.tmp-{secrets.token_hex(4)}"
        try:
            with sftp.open(tmp, "wb") as fh:
                if mode is not None:
                    fh.chmod(mode)  # before any byte is written
                fh.set_pipelined(True)
                fh.write(data)
            sftp.posix_rename(tmp, path)
        except ConnectionError:
            raise       # the connection dropped, not the disk: Host.put says so
        except OSError as exc:  # paramiko's IOError; a full disk is only "Failure" (SSH_FX_FAILURE)
            if not getattr(self.conn, "is_connected", True):   # paramiko's "Socket is closed"
                raise ConnectionError(f"the SSH connection to {self.host} closed during the upload") from None
            with contextlib.suppress(OSError):
                sftp.remove(tmp)
            folder = posixpath.dirname(path) or "/"
            raise RemoteError(
                f"writing {path} on {self.host} failed over SFTP: {exc.strerror or exc}",
                f"a bare 'Failure' usually means the droplet's disk is full: check `df -h {folder}` on it "
                "and free space (`docker system prune` removes unused images, a lower RELEASES_KEEP keeps "
                "fewer releases); otherwise check the folder exists and the deploy user may write it") from None

    def stream(self, command: str, on_line: Callable[[str], None], pty: bool = False) -> Result:
        """Run ``command`` on a channel of its own and hand each line of its output (stdout and
        stderr together, as a terminal shows them) to ``on_line`` as it arrives. Fabric's run
        would keep every byte in memory, and `inv logs --follow` may run for days: only the last
        lines are kept (Result.stdout). ``pty``: the remote side gets a terminal, so closing the
        session (Ctrl-C here) hangs its processes up at once, rather than at their next write."""
        if not self.conn.is_connected:
            self.conn.open()
        channel = self.conn.transport.open_session()
        # One splitter per stream, sharing the tail: a stderr line must not finish a stdout line
        # still waiting for its newline (sshd forwards the two pipes in its own order).
        out = LineSplitter(on_line)
        err = LineSplitter(on_line, tail=out.tail)
        with _ctrl_c_as_flag() as interrupted:
            try:
                if pty:
                    channel.get_pty(width=PTY_WIDTH)
                channel.exec_command(command)
                while not interrupted.is_set():
                    # stderr first: what is ready on it was written no later than the stdout now ready.
                    got = False
                    while channel.recv_stderr_ready():
                        got = True
                        err.feed(channel.recv_stderr(32768))
                    if channel.recv_ready():
                        data = channel.recv(32768)
                        if data:
                            got = True
                            out.feed(data)
                    if (channel.eof_received or channel.closed) and not channel.recv_ready() \
                            and not channel.recv_stderr_ready():
                        break
                    if not got:
                        time.sleep(0.02)
                # the exit status follows the output's end: read it before this side closes
                exited = None if interrupted.is_set() else channel.recv_exit_status()
            finally:
                channel.close()
        if interrupted.is_set():
            raise KeyboardInterrupt
        err.close()
        out.close()
        return Result(command, exited, "\n".join(out.tail) + ("\n" if out.tail else ""))

    def interactive(self, command: str, pty: bool, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> int | None:
        """Run ``command`` attached to this terminal: ``stdin`` goes to it, its output comes back
        as it is (not redacted: the operator asked for this command's output). ``pty``: a remote
        terminal, for a command a person types into (Ctrl-C then reaches the remote command)."""
        res = self.conn.run(command, pty=pty, hide=False, warn=True, in_stream=stdin, out_stream=stdout,
                            err_stream=stderr)
        return res.exited

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):   # its transport may be gone already
                self._sftp.close()
        self.conn.close()


@contextlib.contextmanager
def _ctrl_c_as_flag() -> Iterator[threading.Event]:
    """Ctrl-C (SIGINT) sets the flag instead of raising KeyboardInterrupt wherever the main thread
    happens to be: raised inside paramiko between a lock's acquire and its try, it left the lock
    held, the transport thread waited on it forever and `inv logs --follow` never ended (CI). The
    loop checks the flag between reads and raises KeyboardInterrupt itself once the channel is
    closed. Off the main thread (no signal handler there) the flag is never set."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:   # started with SIGINT ignored (nohup, `&` in a script)
        yield flag
        return
    previous = signal.signal(signal.SIGINT, lambda *_: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


_LABEL_WORDS = 5
# Channels one Host opens at once, SFTP's aside: well below OpenSSH's default MaxSessions (10).
# sshd counts a session until it has processed the channel's close, a moment after the command's
# exit status reached us; with 8 at once (and SFTP) the lab's sshd refused channels ("Connect
# failed") in CI, so there is a margin, and a refused open is tried again (CHANNEL_RETRIES).
MAX_CHANNELS = 5
CHANNEL_RETRIES = 5
CHANNEL_RETRY_SECONDS = 0.2


def command_label(command: str) -> str:
    """A short name for a shell command in a profile: its first few words that are neither
    options, paths nor assignments (``docker compose stackdeploy up``), never its arguments'
    values at length. Secrets are redacted by whoever writes the profile."""
    words = []
    for word in command.replace(";", " ").replace("&&", " ").split():
        if word.startswith(("-", "/", "'", '"', "$", "<", ">", "|")) or "=" in word or "/" in word:
            continue
        words.append(word[:24])
        if len(words) == _LABEL_WORDS:
            break
    return " ".join(words) or command[:24]


def _still_connected(executor: Executor) -> bool:
    """After a command ended without an exit status: True when its connection is still up (the
    command was killed by a signal: sshd sends exit-signal, not exit-status); False when the
    session itself died under it (a drop)."""
    return bool(getattr(getattr(executor, "conn", None), "is_connected", False))


@dataclass
class Host:
    """One droplet. ``open()`` connects (through ``connector``); ``close()`` is idempotent."""

    name: str
    host: str
    layout: ReleaseLayout
    connector: Callable[[bool], Executor] = field(repr=False)
    artifact_prefix: str = "remote/"    # remote/<name>/ once an inventory holds several
    executor: Executor | None = field(default=None, repr=False)
    # Told each command's label and wall time (the run's profile of where the seconds go).
    observer: Callable[[str, float], None] | None = field(default=None, repr=False)
    # Commands run side by side on one connection (the cutover, collect, the status probe); sshd
    # refuses a connection's channels beyond MaxSessions (10 by default), so a few wait their turn.
    _channels: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(MAX_CHANNELS),
                                                  repr=False)

    def open(self, quick: bool = False) -> "Host":
        """Connect. ``quick``: give up at once when the SSH port does not answer (verify)."""
        if self.executor is None:
            self.executor = self.connector(quick)
        return self

    @property
    def connected(self) -> bool:
        return self.executor is not None

    def _exec(self) -> Executor:
        if self.executor is None:
            raise RuntimeError(f"target {self.name} is not connected: call open() first")
        return self.executor

    def run(self, command: str, what: str = "", *, check: bool = True, timeout: float | None = None,
            hint: str = DEFAULT_HINT) -> Result:
        """Run ``command``. With ``check`` a failure raises RemoteCommandError naming ``what``,
        the host and the command's last stderr line; without, the Result is returned as is.
        A session that ended without an exit status raises ConnectionLost either way: that is no
        answer from the command (read as one, a health poll cut off by a drop said "gone" and
        the cutover blamed the new container)."""
        t0 = time.monotonic()
        try:
            with self._channels:
                result = self._exec().run(command, timeout=timeout)
        except _DROPPED as exc:
            raise self._lost(what or f"running `{command.split(None, 1)[0]}`", exc) from None
        finally:
            self._observe(what or command_label(command), t0)
        if result.exited == SESSION_ENDED and not _still_connected(self._exec()):
            raise self._lost(what or f"running `{command.split(None, 1)[0]}`", EOFError("the session ended "
                                                                                        "without an exit status"))
        if check and not result.ok:
            raise RemoteCommandError(f"{what or command} failed on {self.host}: {result.tail()}", hint, result)
        return result

    def put(self, path: str, data: bytes, mode: int | None = None) -> None:
        t0 = time.monotonic()
        try:
            with self._channels:
                self._exec().put(path, data, mode)
        except _DROPPED as exc:
            raise self._lost(f"writing {path}", exc) from None
        finally:
            self._observe("upload", t0)

    def stream(self, command: str, on_line: Callable[[str], None], what: str = "", *, pty: bool = False) -> Result:
        """Run ``command``, each output line to ``on_line`` as it arrives (nothing kept but the
        tail); the Result is returned as is, like run(check=False). A dropped connection raises
        ConnectionLost. Ctrl-C ends the command (KeyboardInterrupt propagates)."""
        t0 = time.monotonic()
        try:
            with self._channels:
                return self._exec().stream(command, on_line, pty=pty)
        except _DROPPED as exc:
            raise self._lost(what or f"running `{command.split(None, 1)[0]}`", exc) from None
        finally:
            self._observe(what or command_label(command), t0)

    def interactive(self, command: str, what: str = "", *, pty: bool, stdin: IO[str] | None = None,
                    stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int | None:
        """Run ``command`` attached to this terminal (default: sys.stdin, stdout, stderr); its exit
        status (None: it gave none). ``pty`` when a person types into it."""
        try:
            return self._exec().interactive(command, pty, stdin or sys.stdin, stdout or sys.stdout,
                                            stderr or sys.stderr)
        except _DROPPED as exc:
            raise self._lost(what or f"running `{command.split(None, 1)[0]}`", exc) from None

    def _observe(self, label: str, t0: float) -> None:
        if self.observer is not None:
            self.observer(label, time.monotonic() - t0)

    def _lost(self, what: str, exc: BaseException) -> ConnectionLost:
        return ConnectionLost(f"the SSH connection to {self.host} dropped while {what} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'closed'})",
                              "check the droplet is up (DigitalOcean console) and reachable from here, then run "
                              "the same command again: it starts over from what is on the droplet")

    def close(self) -> None:
        if self.executor is not None:
            try:
                self.executor.close()
            finally:
                self.executor = None
