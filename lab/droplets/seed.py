"""What the lab's cloud hands a new droplet, as DigitalOcean does through its metadata service:
a NoCloud seed (meta-data, user-data, vendor-data) that the droplet's own cloud-init reads at
boot, plus the lab's per-droplet settings. Pure: returns the files, the backend copies them in.
"""
from __future__ import annotations

import io
import json
import tarfile
import time

import yaml

SEED_DIR = "var/lib/cloud/seed/nocloud"
PRELOAD_PATH = "/var/lib/lab/preload.tar"

# The cloud's vendor data (cloud-init runs it before the user's scripts): load the images the
# droplet cannot pull (no Docker Hub here) once the user data has installed Docker.
VENDOR_DATA = f"""#!/bin/sh
[ -s {PRELOAD_PATH} ] || exit 0
if ! command -v docker >/dev/null 2>&1; then
    echo "lab vendor-data: Docker is not installed, images not preloaded"; exit 0
fi
i=0
until docker info >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 240 ] && {{ echo "lab vendor-data: Docker did not answer"; exit 1; }}
    sleep 0.5
done
docker load -q -i {PRELOAD_PATH}
"""


def meta_data(droplet_id: int, hostname: str, ssh_public_keys: list[str]) -> str:
    return yaml.safe_dump({"instance-id": f"lab-droplet-{droplet_id}", "local-hostname": hostname,
                           "public-keys": [k.strip() for k in ssh_public_keys if k.strip()]},
                          sort_keys=False)


def files(droplet_id: int, hostname: str, ssh_public_keys: list[str], user_data: str | None,
          nameservers: list[str], cgroup_parent: str,
          registry_cas: dict[str, bytes] | None = None) -> dict[str, tuple[bytes, int]]:
    """path in the droplet -> (content, mode). ``registry_cas``: registry server -> the CA its
    certificate chains to, trusted by the droplet's engine (a real cloud's registry has a
    publicly trusted certificate; the lab's has the lab's own CA)."""
    daemon = {"log-driver": "json-file", "log-opts": {"max-size": "10m"},
              # inner containers stay apart from the host engine's own cgroups
              "cgroup-parent": cgroup_parent}
    return {
        f"{SEED_DIR}/meta-data": (meta_data(droplet_id, hostname, ssh_public_keys).encode(), 0o600),
        f"{SEED_DIR}/user-data": ((user_data or "").encode(), 0o600),
        f"{SEED_DIR}/vendor-data": (VENDOR_DATA.encode(), 0o600),
        "etc/lab/nameservers": ("".join(f"{ns}\n" for ns in nameservers).encode(), 0o644),
        "etc/docker/daemon.json": (json.dumps(daemon, indent=2).encode(), 0o644),
        **{f"etc/docker/certs.d/{server}/ca.crt": (pem, 0o644) for server, pem in (registry_cas or {}).items()},
    }


def as_tar(entries: dict[str, tuple[bytes, int]]) -> bytes:
    """For `docker cp -a - container:/`, owned by root."""
    buf = io.BytesIO()
    dirs = sorted({"/".join(p.split("/")[:i]) for p in entries for i in range(1, p.count("/") + 1)})
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            tar.addfile(info)
        for path, (data, mode) in entries.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
