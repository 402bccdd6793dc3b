"""How long `inv lab.up` takes, warm (images cached) and, with --cold, from no lab images.

    .venv/bin/python benchmarks/lab_up.py            # warm up + one droplet create
    .venv/bin/python benchmarks/lab_up.py --cold     # first removes the lab-built images!

Prints figures; asserts nothing. Uses its own lab name, port and subnet.
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import config as labconfig  # noqa: E402
from lab import control  # noqa: E402
from lab.droplets import ContainerBackend  # noqa: E402
from lab.images import builder  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(label: str, fn) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    print(f"{label:<44} {dt:8.1f} s", flush=True)
    return dt


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
            backend = ContainerBackend(cfg, log=quiet)
            timed(f"droplet create, {len(cfg.preload)} images preloaded",
                  lambda: backend.create(1, "bench-1", [], None, []))
            timed("droplet delete", lambda: backend.delete(1))
            timed("lab.down", lambda: control.down(cfg, log=quiet))
        finally:
            control.down(cfg, log=quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
