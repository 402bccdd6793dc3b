"""How long `inv lab.up` takes, warm (images cached) and, with --cold, from no lab images.

    .venv/bin/python benchmarks/lab_up.py            # warm up + one droplet create
    .venv/bin/python benchmarks/lab_up.py --cold     # first removes the lab-built images!

Prints figures; asserts nothing. Uses its own lab name, port and subnet.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import config as labconfig  # noqa: E402
from lab import control  # noqa: E402
from lab.droplets import ContainerBackend  # noqa: E402
from lab.images import builder  # noqa: E402
from lab.ports import free_port  # noqa: E402
from lab import state  # noqa: E402
from deploy import hostkey  # noqa: E402
from deploy.cloud.user_data import build_user_data  # noqa: E402
from deploy.redact import SecretRegistry  # noqa: E402
from remote import cloudinit  # noqa: E402
from remote.connection import SshEndpoint, connector, host_entry  # noqa: E402
from remote.layout import ReleaseLayout  # noqa: E402
from remote.host import Host  # noqa: E402


def timed(label: str, fn) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    print(f"{label:<44} {dt:8.1f} s", flush=True)
    return dt


def boot(backend: ContainerBackend, tmp: Path, holder: dict) -> None:
    """A brand-new droplet from the deployer's own user data, its host key pinned: what
    `inv deploy` waits for before bootstrap."""
    key = state.ensure_keypair(tmp / "keys")
    hk = hostkey.generate(SecretRegistry())
    user_data = build_user_data("deploy", key.with_suffix(".pub").read_text(), hk, "/opt/stackdeploy")
    ip = backend.create(1, "bench-1", [key.with_suffix(".pub").read_text()], user_data, [])
    hostkey.pin(tmp / "known_hosts", host_entry(ip, 22), hk.public)
    ssh = SshEndpoint(host=ip, user="deploy", key_path=key, known_hosts_path=tmp / "known_hosts")
    holder["target"] = Host(name="bench-1", host=ip, layout=ReleaseLayout("/opt/stackdeploy"),
                              connector=connector(ssh)).open()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="remove lab-built images first (rebuilds all)")
    ap.add_argument("--subnet", default="10.250.0.0/24")
    args = ap.parse_args()
    quiet = lambda m: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        cfg = labconfig.LabConfig(name="labbench", subnet=args.subnet, api_port=free_port(),
                                  state_dir=Path(tmp) / ".lab")
        control.down(cfg, log=quiet)
        try:
            if args.cold:
                builder.remove_standins(quiet)
                timed("lab.up cold (debootstrap + all images)", lambda: control.up(cfg, log=quiet))
                control.down(cfg, log=quiet)
            timed("lab.up warm (images cached)", lambda: control.up(cfg, log=quiet))
            timed("lab.up again (already running)", lambda: control.up(cfg, log=quiet))
            backend, holder = ContainerBackend(cfg, log=quiet), {}
            timed("droplet boot until SSH (deployer's user data)", lambda: boot(backend, Path(tmp), holder))
            timed(f"  + cloud-init (Docker install, {len(cfg.preload)} images preloaded)",
                  lambda: cloudinit.wait(holder["target"], 900))
            holder["target"].close()
            timed("droplet delete", lambda: backend.delete(1))
            timed("lab.down", lambda: control.down(cfg, log=quiet))
        finally:
            control.down(cfg, log=quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
