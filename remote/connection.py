"""Fabric connections to the droplet: one configured key, our own pinned known_hosts.

Why our own known_hosts: droplets are created and rebuilt by this tool, so the
user's ~/.ssh/known_hosts is the wrong trust store. No trust on first use: the deployer
generates a new droplet's host key and pins it before the first connection
(deploy/hostkey.py); a host whose key is not pinned, or another key, is refused.
"""
from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import fabric
import paramiko
from paramiko.hostkeys import HostKeys

from remote.errors import RemoteError
from remote.host import SshExecutor

# Paramiko logs a refused channel ("Secsh channel N open FAILED") at ERROR; with no handler of
# its own that reached the operator's terminal, though the command is tried again
# (SshExecutor.run) and any real failure is reported by the run itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# Errors that mean "nothing is listening yet / network not ready": worth retrying
# (a freshly booted droplet refuses SSH for a while). Auth and host-key errors are not.
_RETRYABLE = (paramiko.ssh_exception.NoValidConnectionsError, socket.timeout, TimeoutError,
              ConnectionError, EOFError)


class SshError(RemoteError):
    """A connection problem: what failed, and a ``hint`` to fix it."""


class KeyRefused(SshError):
    """The server answered and refused the key (not a network failure): `inv rotate-ssh-key`
    tells a revoked key from an unreachable droplet by it."""


@dataclass(frozen=True)
class SshEndpoint:
    host: str
    user: str
    key_path: Path
    port: int = 22
    known_hosts_path: Path = Path("~/.config/stackdeploy/known_hosts")
    connect_timeout: float = 10.0
    # A live sshd answers a channel open at once; paramiko's own default is an hour, and invoke's
    # command timeout only starts once the channel is open.
    channel_timeout: float = 30.0
    retries: int = 5          # extra attempts after the first, on connection failures only
    backoff: float = 2.0      # seconds before the first retry; doubles each time (capped)
    max_backoff: float = 30.0

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def load_key(target: SshEndpoint) -> paramiko.PKey:
    """Load the private key, turning every failure into an SshError naming the setting."""
    path = Path(os.path.expanduser(str(target.key_path)))
    if not path.exists():
        raise SshError(f"SSH key {path} does not exist (needed to log in as {target.where})",
                       "check SSH_KEY_PATH: it must point to the private key whose .pub "
                       "is registered on the droplet")
    if not path.is_file():
        raise SshError(f"SSH key {path} is not a file", "check SSH_KEY_PATH")
    try:
        key = paramiko.PKey.from_path(path)
    except PermissionError:
        raise SshError(f"SSH key {path} is not readable by this user",
                       f"fix the file permissions (chmod 600 {path}) or check SSH_KEY_PATH") from None
    except (paramiko.PasswordRequiredException, TypeError):
        # TypeError: cryptography's "password-protected, but password was not provided"
        raise SshError(f"SSH key {path} is protected by a passphrase",
                       "use an unencrypted deploy key (ssh-keygen -t ed25519 -N '' -f KEY) "
                       "and point SSH_KEY_PATH to it") from None
    except (paramiko.SSHException, ValueError, UnicodeDecodeError) as exc:
        # Message from paramiko names the format problem, never the key bytes.
        raise SshError(f"SSH key {path} could not be read as a private key "
                       f"({type(exc).__name__})",
                       "check SSH_KEY_PATH points to a private key (not the .pub file)") from None
    _require_owner_only(path)
    return key


def _require_owner_only(path: Path) -> None:
    """Refuse a private key other users may read, as OpenSSH does ("UNPROTECTED PRIVATE KEY
    FILE"): whoever can read it can log in to the droplet. POSIX modes only; Windows has ACLs."""
    if os.name == "nt":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SshError(f"SSH key {path} is accessible by other users (mode {mode:04o})",
                       f"restrict it to its owner with `chmod 600 {path}`, or point SSH_KEY_PATH "
                       "to a key only you can read")


def host_entry(host: str, port: int) -> str:
    """known_hosts name for host:port, as OpenSSH writes it."""
    return host if port == 22 else f"[{host}]:{port}"


class UnpinnedHostKey(paramiko.SSHException):
    """The server showed a key that is not pinned for it (raised by _RefuseUnpinned)."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(hostname)
        self.hostname, self.key = hostname, key


class _RefuseUnpinned(paramiko.MissingHostKeyPolicy):
    """No host key pinned for this host (or none of the type it shows): refuse. A pinned
    host presenting another key of the same type never gets here: paramiko raises
    BadHostKeyException, which connect() turns into guidance as well."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise UnpinnedHostKey(hostname, key)


def _known_hosts_for(target: SshEndpoint, path: Path) -> HostKeys:
    keys = HostKeys()
    if path.exists():
        try:
            keys.load(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise SshError(f"known_hosts file {path} could not be read ({exc})",
                           f"fix or delete {path}; host keys are re-recorded at next contact") from None
    return keys


class _Connection(fabric.Connection):
    """A Fabric connection several threads may share (the progress watcher polls beside the command
    it watches, remote/progress.py), and whose commands never wait on a dead connection.

    Fabric reconnects inside every ``run`` when the transport is gone (``@opens``). Two threads
    finding it gone at once both called ``SSHClient.connect`` on the one client: each replaced the
    client's transport with its own, one was left negotiated and never authenticated, and a
    command opened its channel on a transport still authenticating, which the server does not
    answer (paramiko then waits ``channel_timeout``, an hour by default). Here (re)connecting
    is one thread at a time; the others wait for it and use the connection it made. A connection
    attempt that fails is closed, not left half open, and a connection that does not answer a
    channel open within the deadline is closed, so the next command reconnects."""

    _reconnect_lock: threading.Lock | None = None   # class attributes: real attributes to Fabric's
    _channel_timeout: float = 30.0                  # DataProxy, not config keys

    def __init__(self, *args, channel_timeout: float = 30.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._reconnect_lock = threading.Lock()
        self._channel_timeout = channel_timeout

    def open(self):
        assert self._reconnect_lock is not None
        with self._reconnect_lock:
            if self.is_connected:      # another thread reconnected while this one waited
                return None
            try:
                return super().open()
            except BaseException:
                self.client.close()    # no half-open transport (negotiated, not authenticated) stays
                raise

    def create_session(self) -> paramiko.Channel:
        self.open()
        transport = self.transport    # set by open() only once authenticated, never a half-made one
        if transport is None:
            raise paramiko.SSHException("not connected")
        try:
            return transport.open_session(timeout=self._channel_timeout)
        except paramiko.ChannelException:
            raise    # the server answered, refusing this channel (its sessions all taken): the
            # connection is fine and carries the other commands (SshExecutor.run tries again)
        except paramiko.SSHException as exc:
            if str(exc) == "Unable to open channel." and transport.is_active():
                raise    # another thread's refusal, taken by this one (paramiko shares it)
            # Open but not answering (the droplet frozen, its network gone without a reset): every
            # channel of it would wait the same way. Closed, the next command connects afresh.
            transport.close()
            raise


def _new_connection(target: SshEndpoint, pkey: paramiko.PKey, known_hosts: Path) -> fabric.Connection:
    # load_ssh_configs=False: the user's ~/.ssh/config must not redirect our connection.
    # in_stream=False: remote commands never read our terminal (no prompts, no stdin leaks).
    config = fabric.Config(overrides={"load_ssh_configs": False,
                                      "run": {"hide": True, "in_stream": False}})
    conn = _Connection(
        host=target.host, user=target.user, port=target.port, config=config,
        connect_timeout=int(max(1, round(target.connect_timeout))),
        forward_agent=False,   # _Connection.create_session sets up no agent forwarding
        connect_kwargs={"pkey": pkey, "allow_agent": False, "look_for_keys": False,
                        "banner_timeout": target.connect_timeout,
                        "auth_timeout": target.connect_timeout,
                        "channel_timeout": target.channel_timeout},
        channel_timeout=target.channel_timeout,
    )
    client = conn.client
    keys = _known_hosts_for(target, known_hosts)
    for name, entry in keys.items():
        for keytype, key in entry.items():
            client.get_host_keys().add(name, keytype, key)
    client.set_missing_host_key_policy(_RefuseUnpinned())
    return conn


def connect(target: SshEndpoint, sleep: Callable[[float], None] = time.sleep) -> fabric.Connection:
    """Open and verify a connection (runs ``true``). Reuse it for the whole run; close it after."""
    pkey = load_key(target)
    known_hosts = Path(os.path.expanduser(str(target.known_hosts_path)))
    attempts = max(0, target.retries) + 1
    delay = target.backoff
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        conn = _new_connection(target, pkey, known_hosts)
        try:
            conn.open()
            conn.run("true", hide=True, in_stream=False)
            return conn
        except paramiko.BadHostKeyException:
            conn.close()
            entry = host_entry(target.host, target.port)
            raise SshError(
                f"host key of {target.host}:{target.port} changed since it was recorded in "
                f"{known_hosts}; refusing to connect (possible man-in-the-middle)",
                f"a droplet created again by `inv deploy` is re-pinned by it; if the droplet was rebuilt "
                f"another way, remove the stale entry with `ssh-keygen -R '{entry}' -f {known_hosts}` "
                f"and pin its new key, read out of band (`ssh-keygen -lf "
                f"/etc/ssh/ssh_host_ed25519_key.pub` in the DigitalOcean console)") from None
        except UnpinnedHostKey as exc:
            conn.close()
            raise SshError(
                f"{target.host}:{target.port} presented an SSH host key that is not pinned in "
                f"{known_hosts} ({exc.key.get_name()} {exc.key.fingerprint}); refusing to connect "
                f"(no trust on first use)",
                "a droplet created by `inv deploy` or `inv provision` is pinned before its first "
                "contact; for any other host, read its key out of band (DigitalOcean console: "
                "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), and once the fingerprint "
                f"matches add `{host_entry(target.host, target.port)} <type> <base64 key>` to "
                f"{known_hosts}") from None
        except paramiko.AuthenticationException:
            conn.close()
            raise KeyRefused(
                f"the server refused key {target.key_path} for user {target.user} "
                f"on {target.host}:{target.port}",
                f"register the public key {target.key_path}.pub for user {target.user} on the "
                f"droplet (~{target.user}/.ssh/authorized_keys), or check SSH_KEY_PATH and "
                f"SSH_USER") from None
        except _RETRYABLE as exc:
            conn.close()
            last = exc
        except paramiko.SSHException as exc:
            # Banner/handshake failures while sshd is starting: retry as well.
            conn.close()
            last = exc
        except OSError as exc:  # no route to host, network unreachable
            conn.close()
            last = exc
        if attempt < attempts:
            sleep(delay)
            delay = min(delay * 2, target.max_backoff)
    raise SshError(
        f"could not reach SSH on {target.host}:{target.port} after {attempts} attempt(s): "
        f"{_describe(last)}",
        "check the droplet is running, its IP is right and the firewall allows SSH "
        "from this machine's address; raise the SSH retries/timeout if it is still booting")


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def ssh_reachable(host: str, port: int, timeout: float = 5) -> str | None:
    """None when the SSH port answers with a banner; otherwise why not (for the warning)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            banner = sock.recv(64)
            return None if banner.startswith(b"SSH-") else f"port {port} answered without an SSH banner"
    except OSError as exc:
        return f"cannot reach {host}:{port}: {exc}"


def connector(target: SshEndpoint) -> Callable[[bool], SshExecutor]:
    """What a remote.host.Host calls to open its connection. ``quick``: fail at once,
    without retries, when the SSH port does not answer (verify must not wait on a dead host)."""
    def open_connection(quick: bool) -> SshExecutor:
        if quick:
            why = ssh_reachable(target.host, target.port, timeout=target.connect_timeout)
            if why is not None:
                raise SshError(why, "check the droplet is running, its IP is right and the firewall allows "
                                    "SSH from this machine's address (inv provision updates the allowlist)")
        return SshExecutor(connect(target))
    return open_connection
