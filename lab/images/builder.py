"""Turn Recipes into images on the host engine, cached by the recipe digest.

base   : debootstrap minbase bookworm + the host's extra CA certs -> `docker import`
others : `docker create` from base, `docker cp` the files in, run apt + the recipe's shell,
         `docker commit` with the recipe's config. No Dockerfile, no registry.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from lab.docker import docker, inspect
from lab.errors import LabError
from lab.images import recipes, wheels
from lab.images.recipes import BASE_TAG, CA_BUNDLE, LABEL_IMAGE, LABEL_RECIPE, Recipe

Log = Callable[[str], None]
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "stackdeploy-lab"


@contextmanager
def _build_lock():
    """One builder at a time per machine: parallel tests or two `lab.up`s share the cache."""
    path = cache_dir() / "build.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _host_cas() -> list[Path]:
    return sorted(p for p in HOST_CA_DIR.glob("**/*.crt") if p.is_file()) if HOST_CA_DIR.is_dir() else []


def base_digest(mirror: str = DEFAULT_MIRROR) -> str:
    h = hashlib.sha256(f"bookworm|minbase|ca-certificates|{mirror}|v3".encode())
    for ca in _host_cas():
        h.update(ca.name.encode() + ca.read_bytes())
    return h.hexdigest()[:16]


def _current(tag: str, digest: str) -> tuple[bool, bool]:
    """(exists and current, exists but is not ours: a real pulled image to leave alone)."""
    info = inspect("image", tag)
    if info is None:
        return False, False
    labels = (info.get("Config") or {}).get("Labels") or {}
    if LABEL_IMAGE not in labels:
        return True, True
    return labels.get(LABEL_RECIPE) == digest, False


class _Progress:
    """Heartbeat for long steps: a build's own output goes to a log file, not the console."""

    def __init__(self, log: Log, what: str, every: float = 20.0):
        self.log, self.what, self.every = log, what, every
        self._stop = threading.Event()
        self._t0 = time.monotonic()

    def __enter__(self):
        self.log(f"building {self.what} ...")
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def _beat(self):
        while not self._stop.wait(self.every):
            self.log(f"  ... still building {self.what} ({time.monotonic() - self._t0:.0f}s)")

    def __exit__(self, *exc):
        self._stop.set()
        if exc[0] is None:
            self.log(f"built {self.what} in {time.monotonic() - self._t0:.0f}s")


def _run_logged(cmd: list[str], logfile: Path, what: str, **kw) -> None:
    with open(logfile, "ab") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, **kw)
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-25:]
        raise LabError(f"{what} failed (exit {proc.returncode}); full log: {logfile}\n" + "\n".join(tail))


def ensure_base(log: Log = print, mirror: str = DEFAULT_MIRROR) -> str:
    """The shared debootstrap base image; returns its digest."""
    digest = base_digest(mirror)
    ok, _ = _current(BASE_TAG, digest)
    if ok:
        return digest
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed (needed once to build the lab's Debian "
                       "base image): run `sudo scripts/install-docker.sh` or `apt-get install debootstrap`")
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logfile = logs / "base.log"
    logfile.write_bytes(b"")
    with _Progress(log, f"{BASE_TAG} (debootstrap bookworm)"), \
            tempfile.TemporaryDirectory(prefix="lab-rootfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        _run_logged(["debootstrap", "--variant=minbase", "--include=ca-certificates",
                     "bookworm", str(root), mirror], logfile, "debootstrap", timeout=1800)
        _prepare_rootfs(root, mirror)
        _run_logged(["chroot", str(root), "update-ca-certificates"], logfile, "update-ca-certificates")
        changes = [*recipes._COMMON_ENV,
                   *(f"ENV {k}={CA_BUNDLE}" for k in
                     ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS",
                      "CURL_CA_BUNDLE")),
                   'CMD ["bash"]', f"LABEL {LABEL_IMAGE}=base {LABEL_RECIPE}={digest}"]
        args = [a for c in changes for a in ("--change", c)]
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."],
                               stdout=subprocess.PIPE)
        try:
            docker("import", *args, "-", BASE_TAG, stdin=tar.stdout, timeout=900)
        finally:
            tar.stdout.close()
            tar.wait()
    return digest


def _prepare_rootfs(root: Path, mirror: str) -> None:
    """What the official Debian images add: no daemons started by dpkg, lean apt, full sources."""
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    (root / "etc/apt/apt.conf.d/docker-clean").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        'Acquire::Languages "none";\n')
    security = mirror.replace("/debian", "/debian-security") if mirror.endswith("/debian") \
        else "http://deb.debian.org/debian-security"
    (root / "etc/apt/sources.list").write_text(
        f"deb {mirror} bookworm main\ndeb {mirror} bookworm-updates main\n"
        f"deb {security} bookworm-security main\n")
    dest = root / "usr/local/share/ca-certificates"
    dest.mkdir(parents=True, exist_ok=True)
    for ca in _host_cas():
        shutil.copy(ca, dest / ca.name)


def _build_script(recipe: Recipe) -> str:
    apt = ""
    if recipe.packages:
        apt = ("apt-get update\n"
               f"apt-get install -y --no-install-recommends {' '.join(recipe.packages)}\n")
    return ("#!/bin/sh\nset -eux\nexport DEBIAN_FRONTEND=noninteractive\n"
            f"{recipe.pre}\n{apt}{recipe.post}\n"
            "apt-get clean\nrm -rf /var/lib/apt/lists/* /lab-build\n")


def _add_bytes(tar: tarfile.TarFile, path: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _context_tar(recipe: Recipe, out: Path, log: Log) -> None:
    """Everything copied into the build container, at its final path, as one tar."""
    with tarfile.open(out, "w") as tar:
        _add_bytes(tar, "/lab-build/build.sh", _build_script(recipe).encode(), 0o755)
        for dest, src in recipe.files:
            p = recipes.FILES / src
            _add_bytes(tar, dest, p.read_bytes(), 0o755 if os.access(p, os.X_OK) else 0o644)
        for w in recipe.wheels:
            whl = wheels.fetch_wheel(w.spec, cache_dir() / "wheels")
            import zipfile
            with zipfile.ZipFile(whl) as zf:
                for info, rel in wheels.members(whl, w.prefix):
                    mode = (info.external_attr >> 16) & 0o777 or 0o644
                    dest = w.dest + rel if w.dest.endswith("/") else w.dest
                    _add_bytes(tar, dest, zf.read(info), mode)


def ensure_image(recipe: Recipe, log: Log = print, mirror: str = DEFAULT_MIRROR) -> str:
    """Build `recipe.tag` unless a current build (or a real, non-lab image) is present."""
    with _build_lock():
        bdigest = ensure_base(log, mirror)
        digest = recipe.digest(bdigest)
        ok, foreign = _current(recipe.tag, digest)
        if foreign:
            log(f"using the existing {recipe.tag} (not a lab stand-in; left untouched)")
        if ok:
            return recipe.tag
        logfile = cache_dir() / "logs" / (recipe.tag.replace("/", "_").replace(":", "_") + ".log")
        logfile.parent.mkdir(parents=True, exist_ok=True)
        logfile.write_bytes(b"")
        name = f"lab-build-{digest}-{os.getpid()}"
        with _Progress(log, recipe.tag), tempfile.TemporaryDirectory(prefix="lab-ctx-") as tmp:
            ctx = Path(tmp) / "ctx.tar"
            _context_tar(recipe, ctx, log)
            # `docker commit --change` cannot set STOPSIGNAL; the container's own config can,
            # and commit keeps it. (No label here: the image would inherit it.)
            stop = [c.split(None, 1)[1] for c in recipe.changes if c.startswith("STOPSIGNAL ")]
            docker("create", "--name", name, *(["--stop-signal", stop[0]] if stop else []),
                   BASE_TAG, "/lab-build/build.sh")
            try:
                with open(ctx, "rb") as fh:
                    docker("cp", "-a", "-", f"{name}:/", stdin=fh)
                _run_logged(["docker", "start", "-a", name], logfile, f"building {recipe.tag}",
                            timeout=1800)
                changes = [*(c for c in recipe.changes if not c.startswith("STOPSIGNAL ")), f"LABEL {LABEL_IMAGE}={recipe.tag} {LABEL_RECIPE}={digest}"]
                docker("commit", *[a for c in changes for a in ("--change", c)], name, recipe.tag)
            finally:
                docker("rm", "-f", name, check=False)
        return recipe.tag


def ensure_droplet_image(log: Log = print, mirror: str = DEFAULT_MIRROR) -> str:
    return ensure_image(recipes.DROPLET, log, mirror)


def ensure_standins(tags: Iterable[str] | None = None, log: Log = print,
                    mirror: str = DEFAULT_MIRROR) -> list[str]:
    """Build (or reuse) the stand-in images tagged exactly as the stack uses them."""
    wanted = list(tags) if tags is not None else list(recipes.STANDINS)
    unknown = [t for t in wanted if t not in recipes.STANDINS]
    if unknown:
        raise LabError(f"no lab stand-in for {', '.join(unknown)}; known: {', '.join(recipes.STANDINS)}")
    return [ensure_image(recipes.STANDINS[t], log, mirror) for t in wanted]


def pull_images(tags: Iterable[str], log: Log = print) -> list[str]:
    """images: pull mode, for machines that do reach Docker Hub."""
    out = []
    for tag in tags:
        log(f"pulling {tag} ...")
        docker("pull", "--quiet", tag, timeout=1800)
        out.append(tag)
    return out


def remove_standins(log: Log = print) -> list[str]:
    """Remove the lab-built images (only those carrying our label under our exact tags)."""
    removed = []
    for tag in [*recipes.STANDINS, *recipes.INFRA, recipes.DROPLET_TAG, BASE_TAG]:
        info = inspect("image", tag)
        if info and LABEL_IMAGE in ((info.get("Config") or {}).get("Labels") or {}):
            docker("rmi", tag, check=False)
            removed.append(tag)
    return removed
