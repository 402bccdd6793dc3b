"""A small stack folder shaped like stack/: compose file, build contexts, noise to ignore."""
from __future__ import annotations

import os
from pathlib import Path

COMPOSE = """\
services:
  api:
    build: ./api
  web:
    build:
      context: ./web
      dockerfile: Dockerfile
  redis:
    image: redis:7
"""


def make_stack(root: Path, big_bytes: int = 256 * 1024) -> Path:
    (root / "api").mkdir(parents=True)
    (root / "web" / "static").mkdir(parents=True)
    (root / "traefik").mkdir()
    (root / "compose.yml").write_text(COMPOSE)
    (root / "api" / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY . /app\n")
    (root / "api" / "main.py").write_text("print('v1')\n")
    (root / "api" / "run.sh").write_text("#!/bin/sh\nexec python main.py\n")
    os.chmod(root / "api" / "run.sh", 0o755)
    (root / "web" / "Dockerfile").write_text("FROM node:20\n")
    # incompressible payload so a full push is clearly bigger than a one-file delta
    (root / "web" / "static" / "bundle.bin").write_bytes(os.urandom(big_bytes))
    (root / "traefik" / "dynamic.yml").write_text("http: {}\n")
    (root / "obsolete.txt").write_text("to be removed\n")
    # never shipped
    (root / ".env").write_text("SECRET_KEY=local-secret\n")
    (root / "web" / "node_modules" / "pkg").mkdir(parents=True)
    (root / "web" / "node_modules" / "pkg" / "index.js").write_text("x")
    (root / "api" / "__pycache__").mkdir()
    (root / "api" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    return root
