"""Run the fake API as a process: python -m lab.fake_do --port P --token T ...

The lab starts it in the background with its container backend; --state-file lets a
restarted API remember droplets, firewalls and DNS.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from typing import Any

from .backend import DnsPublisher, DropletBackend
from .registry import DOCR_SERVER, SERVER_ENV
from .server import FakeDigitalOcean


def load_factory(spec: str, flag: str = "--backend-factory") -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"{flag} must look like module:callable, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"{flag} {spec!r} cannot be loaded: {exc}") from None
    return factory()


TOKEN_ENV = "FAKE_DO_TOKEN"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.fake_do", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", help="the Bearer token clients must send; prefer the environment "
                                         f"variable {TOKEN_ENV}, which other local users cannot read in `ps`")
    parser.add_argument("--operator-ip", default="127.0.0.1",
                        help="answer of GET /lab/my-ip (the operator's public IP)")
    parser.add_argument("--backend-factory", help="module:callable returning a DropletBackend")
    parser.add_argument("--dns-factory", help="module:callable returning a DnsPublisher (the lab's DNS server)")
    parser.add_argument("--state-file", help="JSON file that keeps the state across restarts")
    parser.add_argument("--max-per-page", type=int, default=200)
    parser.add_argument("--registry-server", default=os.environ.get(SERVER_ENV) or DOCR_SERVER,
                        help="the container registry's address in the docker credentials it hands out "
                             f"(default: ${SERVER_ENV}, else {DOCR_SERVER})")
    args = parser.parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        parser.error(f"give the API token in the environment variable {TOKEN_ENV} (or --token)")

    backend: DropletBackend | None = load_factory(args.backend_factory) if args.backend_factory else None
    dns: DnsPublisher | None = load_factory(args.dns_factory, "--dns-factory") if args.dns_factory else None
    fake = FakeDigitalOcean(token, backend=backend, operator_ip=args.operator_ip,
                            max_per_page=args.max_per_page, state_file=args.state_file, dns=dns,
                            registry_server=args.registry_server)
    url = fake.start(args.host, args.port)
    print(url, flush=True)  # the caller reads the bound URL from the first line
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
