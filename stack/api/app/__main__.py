"""Container entry point: validate settings first (a clear one-line error, no traceback),
then serve with uvicorn."""
from __future__ import annotations

import argparse
import sys

import uvicorn

from .config import ConfigError, load_settings
from .drain import DrainingServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Run the stack API.")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        load_settings()
    except ConfigError as exc:
        print(f"api: configuration error: {exc}", file=sys.stderr)
        return 2
    # http: a protocol that lets connections accepted just before SIGTERM finish, and a server
    # that serves those the kernel had queued (app/drain.py)
    options = dict(host=args.host, port=args.port, workers=args.workers, server_header=False, log_level="info",
                   http="app.drain:DrainingH11Protocol")
    if args.workers > 1:   # uvicorn's supervisor: each worker runs uvicorn's own Server
        uvicorn.run("app.main:app", **options)
    else:
        DrainingServer(uvicorn.Config("app.main:app", **options)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
