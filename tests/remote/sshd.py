"""A real OpenSSH server on 127.0.0.1 for the remote/ tests (temp keys, random port)."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.ports import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "sdtest", "-f", str(path)],
                   check=True)
    return path


@dataclass
class Sshd:
    """One sshd process; ``restart(new_host_key=True)`` simulates a rebuilt droplet."""

    workdir: Path
    port: int
    user: str
    user_key: Path
    host_key: Path
    proc: subprocess.Popen | None = None
    max_sessions: int = 50

    def config_text(self) -> str:
        auth = self.workdir / "authorized_keys"
        return "\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}", f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {auth}", "UsePAM no", "StrictModes no",
            "PermitRootLogin yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "AllowAgentForwarding no", "X11Forwarding no", "PrintMotd no",
            "Subsystem sftp internal-sftp", "MaxStartups 50", f"MaxSessions {self.max_sessions}",
            "LogLevel ERROR", "",
        ])

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
        cfg = self.workdir / "sshd_config"
        cfg.write_text(self.config_text())
        with open(self.workdir / "sshd.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)],
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited: " + (self.workdir / "sshd.log").read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening in 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, new_host_key: bool = False) -> None:
        self.stop()
        if new_host_key:
            for p in (self.host_key, self.host_key.with_suffix(".pub")):
                p.unlink(missing_ok=True)
            keygen(self.host_key)
        self.start()


def make_sshd(workdir: Path, max_sessions: int = 50) -> Sshd:
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    user_key = keygen(workdir / "user_key")
    host_key = keygen(workdir / "host_key")
    (workdir / "authorized_keys").write_text((workdir / "user_key.pub").read_text())
    server = Sshd(workdir=workdir, port=free_port(), user=getpass.getuser(),
                  user_key=user_key, host_key=host_key, max_sessions=max_sessions)
    server.start()
    return server


def pin(server: Sshd, known_hosts: Path, host: str = "127.0.0.1") -> Path:
    """Pin the sshd's host key out of band, as the deployer does for a droplet it creates."""
    from deploy import hostkey
    from remote.connection import host_entry
    hostkey.pin(known_hosts, host_entry(host, server.port), server.host_key.with_suffix(".pub").read_text())
    return known_hosts
