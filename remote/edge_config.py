"""Traefik's live routes and dashboard users: one folder on the droplet, outside every release,
that Traefik's file provider watches, so a change to either is a hot reload, never a restart.

    <base>/edge/                (0700)
        traefik/                (0755, mounted read-only at /etc/traefik/dynamic)
            dynamic.yml         the live release's traefik/dynamic.yml (Go-templated by Traefik)
            auth.yml            the basic-auth middlewares, rendered from the live release's env

A release carries its own copies (``traefik/dynamic.yml`` and ``.secrets/traefik/auth.yml``,
the latter over sftp only); going live copies them in with a rename each, after a comparison,
so an unchanged file is not touched and Traefik does not reload for nothing. The users are not
in Traefik's environment: rotating FLOWER_BASIC_AUTH or ADMIN_BASIC_AUTH changes nothing
compose or Swarm compares, so Traefik (the only holder of 80/443) keeps running.
"""
from __future__ import annotations

import posixpath
from typing import Mapping

from remote.commands import q

DIR_VAR = "EDGE_CONFIG_DIR"      # deployer-filled: where compose mounts the folder from
MOUNT = "/etc/traefik/dynamic"
AUTH_FILE = ".secrets/traefik/auth.yml"
ROUTES_FILE = "traefik/dynamic.yml"
# Middleware -> the env value holding its htpasswd line (a bcrypt hash: deploy/secret_rules.py).
BASIC_AUTH = {"flower-auth": "FLOWER_BASIC_AUTH", "admin-auth": "ADMIN_BASIC_AUTH"}
# What goes live, in this order: the users before the routes that name them.
PUBLISHED = (("auth.yml", AUTH_FILE), ("dynamic.yml", ROUTES_FILE))


def folder(base: str) -> str:
    return posixpath.join(base, "edge", "traefik")


def auth_yaml(env: Mapping[str, str]) -> str:
    """The basic-auth middlewares for the users ``env`` sets (one without a value is left out:
    a router naming it fails closed, Traefik answers 404)."""
    lines = ["# Written by stackdeploy from the release's env (remote/edge_config.py). Do not edit:",
             "# the next deploy replaces it. Traefik reloads it live.",
             "http:", "  middlewares:"]
    for middleware, name in BASIC_AUTH.items():
        value = env.get(name, "")
        if not value:
            continue
        quoted = "'" + value.replace("'", "''") + "'"
        lines += [f"    {middleware}:", "      basicAuth:", "        removeHeader: true", "        users:",
                  f"          - {quoted}"]
    if lines[-1] == "  middlewares:":
        lines[-1] = "  middlewares: {}"
    return "\n".join(lines) + "\n"


def publish(base: str, release_dir: str) -> str:
    """Copies the release's edge files into the live folder, each only when it differs, with a
    rename (Traefik never reads half a file); prints the names it replaced. A release without
    them (made by an earlier version, its Traefik mounts its own file) publishes nothing."""
    live = folder(base)
    parts = [f"mkdir -p {q(live)}", f"chmod 0700 {q(posixpath.dirname(live))}", f"chmod 0755 {q(live)}"]
    for name, source in PUBLISHED:
        src, dest, tmp = posixpath.join(release_dir, source), posixpath.join(live, name), posixpath.join(live, f".{name}.tmp")
        parts.append(f"if [ -f {q(src)} ] && ! cmp -s {q(src)} {q(dest)}; then "
                     f"rm -f {q(tmp)} && cp {q(src)} {q(tmp)} && chmod 0444 {q(tmp)} && mv -f {q(tmp)} {q(dest)} && echo {q(name)}; fi")
    return " && ".join(parts)
