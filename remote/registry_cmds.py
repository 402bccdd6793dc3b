"""Registry commands for a node: log in, tag, push, pull, log out (pure command builders).

The login is a Docker client config of the deploy's own (``docker --config DIR``), not the
deploy user's ~/.docker: DigitalOcean's registry credentials are a token as both user *and*
password, so ``docker login --username <user> --password-stdin`` would still put the token on a
command line, which `ps` shows every user of the node and the run log records. The credentials
instead travel in a file: ``login`` uploads the config as a 0600 file beside its final place,
and ``login_command`` moves it into place in a 0700 folder (or deletes it, whatever happens).
Every later command names the folder (``--config``), so only the deploy's docker commands use
the login, and ``logout_command`` removes it. ``docker stack deploy --with-registry-auth`` run
with the same ``--config`` hands the login to the swarm's nodes for their pulls.
"""
from __future__ import annotations

import json
import posixpath
import secrets
import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from remote.host import Host

CONFIG_FILE = "config.json"


def _dir(config_dir: str) -> str:
    if not posixpath.isabs(config_dir) or "\n" in config_dir:
        raise ValueError(f"the docker config folder must be an absolute path, not {config_dir!r}")
    return posixpath.normpath(config_dir)


def docker(config_dir: str) -> str:
    """``docker --config DIR``: the client that uses the deploy's registry login."""
    return f"docker --config {shlex.quote(_dir(config_dir))}"


def docker_config(server: str, auth: str) -> str:
    """The config.json that logs the client in to ``server``; ``auth`` is base64(user:password).
    Secret content: upload it with mode 0600, never print it."""
    return json.dumps({"auths": {server: {"auth": auth}}}, indent=1) + "\n"


def staged_path(config_dir: str) -> str:
    """Where ``login`` uploads the config before ``login_command`` moves it into place: beside
    the config folder (same filesystem: the move is a rename), under a name of its own."""
    return posixpath.join(posixpath.dirname(_dir(config_dir)), f".registry-login-{secrets.token_hex(6)}")


def login_command(config_dir: str, staged: str) -> str:
    """Make the 0700 config folder and move the staged 0600 config into it; the staged file is
    removed whatever happens."""
    d, f = shlex.quote(_dir(config_dir)), shlex.quote(staged)
    return (f"trap 'rm -f {f}' EXIT; mkdir -p {d} && chmod 700 {d} && chmod 600 {f} && "
            f"mv -f {f} {d}/{CONFIG_FILE}")


def tag_command(source: str, ref: str) -> str:
    return f"docker tag {shlex.quote(source)} {shlex.quote(ref)}"


def push_command(config_dir: str, ref: str) -> str:
    return f"{docker(config_dir)} push --quiet {shlex.quote(ref)}"


def pull_command(config_dir: str, ref: str) -> str:
    return f"{docker(config_dir)} pull --quiet {shlex.quote(ref)}"


def logout_command(config_dir: str, server: str) -> str:
    """Forget the login (docker rewrites config.json without the server's entry)."""
    return f"{docker(config_dir)} logout {shlex.quote(server)}"


def login(target: "Host", config_dir: str, server: str, auth: str) -> None:
    """Log ``target``'s docker client (with ``--config config_dir``) in to ``server``."""
    staged = staged_path(config_dir)
    target.put(staged, docker_config(server, auth).encode(), mode=0o600)
    target.run(login_command(config_dir, staged), f"logging {target.name} in to the registry {server}",
               hint="check the deploy user can write " + posixpath.dirname(_dir(config_dir)))
