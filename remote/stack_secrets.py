"""The stack's server passwords on the droplet: files beside a release's .env, and changing them
in the running servers without a restart.

PostgreSQL and Redis read their passwords at start from ``.secrets/`` in the release folder
(mounted through the ``current`` link), not from their environment: a rotated password then
changes nothing compose compares, so neither server is recreated. Around a go-live the deployer
applies the difference between the live release's files and the new one's in the running
servers, in two halves, so that the old clients and the new ones both log in throughout:

    before     PostgreSQL: the new login (the app role or its alternate) gets the new password,
               the old login keeps its own; the superuser's is set. Redis: the new password is
               added beside the old one.
    after      the old login's password is removed (it cannot log in), Redis keeps the new one alone.
    on failure the live release's files again: what the new release added is removed.

Every command reads the files on the droplet (``cat``, stdin of ``docker exec``): no password is
ever on a command line, in this process or in a log.
"""
from __future__ import annotations

import io
import posixpath
from typing import Mapping, Sequence

from dotenv import dotenv_values

from remote import edge_config
from remote.commands import join, q

SECRETS_DIR = ".secrets"
POSTGRES_FILE = ".secrets/postgres/passwords"   # superuser's password, app login, app password
REDIS_FILE = ".secrets/redis/password"
LOGIN = "POSTGRES_APP_LOGIN"            # deployer-filled: which of the two logins the clients use
ALTERNATE_SUFFIX = "_alt"
APP_ROLE = "/usr/local/lib/stack-postgres/app-role.sh"
NO_CONTAINER = 64


def alternate(app_user: str) -> str:
    return app_user + ALTERNATE_SUFFIX


def files(env: Mapping[str, str]) -> dict[str, str]:
    """The files a release's env gives the servers (only those whose values it has)."""
    out = {}
    if env.get("POSTGRES_PASSWORD") and env.get("POSTGRES_APP_PASSWORD"):
        login = env.get(LOGIN) or env.get("POSTGRES_APP_USER", "")
        out[POSTGRES_FILE] = f"{env['POSTGRES_PASSWORD']}\n{login}\n{env['POSTGRES_APP_PASSWORD']}\n"
    if env.get("REDIS_PASSWORD"):
        out[REDIS_FILE] = f"{env['REDIS_PASSWORD']}\n"
    if any(env.get(name) for name in edge_config.BASIC_AUTH.values()):
        out[edge_config.AUTH_FILE] = edge_config.auth_yaml(env)
    return out


def files_from_env_text(env_text: str) -> dict[str, str]:
    return files({k: v for k, v in dotenv_values(stream=io.StringIO(env_text)).items() if v is not None})


def make_dirs(release_dir: str) -> str:
    """``.secrets`` closed to everyone but the deploy user; each server's folder readable, as the
    container's own user (not root) reads it through the bind mount."""
    root = posixpath.join(release_dir, SECRETS_DIR)
    subs = [posixpath.join(root, s) for s in ("postgres", "redis", "traefik")]
    return f"mkdir -p {join(subs)} && chmod 0700 {q(root)} && chmod 0755 {join(subs)}"


def changed(live_dir: str, target_dir: str) -> str:
    """Prints each server file that differs between two release folders (where both have it: a
    release without them ran its servers from their environment, which a go-live recreates)."""
    checks = [f"{{ [ -f {q(posixpath.join(live_dir, f))} ] && [ -f {q(posixpath.join(target_dir, f))} ] && "
              f"! cmp -s {q(posixpath.join(live_dir, f))} {q(posixpath.join(target_dir, f))} && echo {q(f)}; }}"
              for f in (POSTGRES_FILE, REDIS_FILE)]
    return "; ".join(checks) + "; true"


def _in_service(filters: Sequence[str], service: str, stdin_files: Sequence[str], argv: Sequence[str]) -> str:
    found = " ".join(f"--filter {q(f)}" for f in filters)
    present = " && ".join(f"[ -s {q(f)} ]" for f in stdin_files)
    return (f'{present} || {{ echo "missing: {" ".join(stdin_files)}" >&2; exit 1; }}; '
            f'c=$(docker ps -q {found} | head -n 1); '
            f'if [ -z "$c" ]; then echo "no running {service} container" >&2; exit {NO_CONTAINER}; fi; '
            f'cat {join(stdin_files)} | docker exec -i "$c" {join(argv)}')


def postgres(filters: Sequence[str], passwords_file: str, keep_other: bool) -> str:
    """app-role.sh in the running PostgreSQL with ``passwords_file`` on its stdin; ``keep_other``:
    the login not named keeps its password (the first half of a rotation)."""
    return _in_service(filters, "postgres", [passwords_file],
                       ["env", "APP_ROLE_INPUT=-", f"APP_ROLE_KEEP_OTHER={int(keep_other)}", "bash", APP_ROLE])


# redis-cli exits 0 on an error reply: its output is compared instead, and never echoed (an ACL
# error quotes the modifier, which holds the password).
_REDIS = ('IFS= read -r auth; IFS= read -r p; out=$(printf "{commands}" "$p" | REDISCLI_AUTH="$auth" '
          'redis-cli 2>&1); [ "$(echo $out)" = "{expect}" ] && exit 0; '
          'case "$out" in *WRONGPASS*|*NOAUTH*) echo "redis refused the live password" >&2;; '
          '*) echo "redis refused the change (an error reply)" >&2;; esac; exit 1')


def redis_add(filters: Sequence[str], auth_file: str, add_file: str) -> str:
    """Redis accepts the password in ``add_file`` as well (authenticated with ``auth_file``'s)."""
    script = _REDIS.format(commands="ACL SETUSER default on >%s\\n", expect="OK")
    return _in_service(filters, "redis", [auth_file, add_file], ["sh", "-c", script])


def redis_only(filters: Sequence[str], auth_file: str, only_file: str) -> str:
    """Redis accepts only the password in ``only_file``, and its config file says so (the
    healthcheck reads it; a restart reads the release's file anyway)."""
    script = _REDIS.format(commands="CONFIG SET requirepass %s\\nCONFIG REWRITE\\n", expect="OK OK")
    return _in_service(filters, "redis", [auth_file, only_file], ["sh", "-c", script])
