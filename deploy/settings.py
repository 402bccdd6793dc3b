"""invoke.yaml defaults + env file + environment + task flags -> one frozen, validated Settings.

Precedence, highest first: task flags, real environment variables, the env file, invoke.yaml,
built-in defaults. Real environment variables win over the env file (python-dotenv's
``override=False`` convention), so a CI secret store can override a checked-out file.
Every key is declared once in KEYS: the README's configuration reference lists the same table.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from dotenv import dotenv_values

from deploy import acme, resolvers
from deploy.errors import ConfigError
from deploy.redact import (DISTINCTIVE_ONE_CLASS_LENGTH, MIN_SECRET_VALUE_LENGTH, REGISTRY, Secret,
                           SecretRegistry, char_classes, is_distinctive, is_secret_name)

DEPLOY_ENVS = ("production", "staging", "development")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")
_PLACEHOLDER = re.compile(r"(?i)change[-_ ]?me|replace[-_ ]?me|^<.*>$|^x{4,}$")


@dataclass(frozen=True)
class Key:
    """One setting: its environment name, where invoke.yaml keeps its default, and its type."""

    env: str
    path: str | None
    kind: str  # str | int | float | bool | list
    doc: str
    secret: bool = False
    aliases: tuple[str, ...] = ()
    default: Any = None


KEYS: tuple[Key, ...] = (
    Key("DIGITALOCEAN_TOKEN", None, "str", "DigitalOcean API token (read+write). Required for deploy and provision.",
        secret=True, aliases=("DIGITALOCEAN_ACCESS_TOKEN",)),
    Key("DIGITALOCEAN_END_POINT", None, "str", "API endpoint, ending in /v2/ (python-digitalocean's own variable); the lab sets it."),
    Key("DOMAIN", None, "str", "Public host name of the stack, e.g. app.example.com. Required."),
    Key("DEPLOY_ENV", "deploy_env", "str", "production, staging or development; the admin router exists only outside production."),
    Key("PROJECT_NAME", "project", "str", "Compose project name and /opt/<project> on the droplet."),
    Key("SUBDOMAINS", "subdomains", "list", "Comma-separated subdomains given A records beside the apex."),
    Key("DROPLET_NAME", "droplet.name", "str", "Droplet to find or create."),
    Key("DROPLET_REGION", "droplet.region", "str", "Region slug for a new droplet."),
    Key("DROPLET_SIZE", "droplet.size", "str", "Size slug for a new droplet."),
    Key("DROPLET_IMAGE", "droplet.image", "str", "Image slug for a new droplet (an Ubuntu LTS)."),
    Key("DROPLET_TAGS", "droplet.tags", "list", "Comma-separated tags put on the droplet and used to find it."),
    Key("NODES", "droplet.nodes", "int", "Droplets the stack runs on: 1 is one droplet with Docker Compose; more form a Docker Swarm (same tag, same VPC), images through the container registry (same as --nodes). Unset: as many as the cluster has (1 for a new stack); another number is a scale request, which only a full deploy carries out."),
    Key("REGISTRY_NAME", "registry.name", "str", "DigitalOcean Container Registry the swarm's images go through (NODES > 1); created if the account has none (one per account)."),
    Key("DROPLET_IP", None, "str", "Skip IP discovery and use this address (verify without API access)."),
    Key("DEPLOY_USER", "ssh.user", "str", "SSH user on the droplet (created by cloud-init, in the docker group)."),
    Key("SSH_KEY_PATH", "ssh.key_path", "str", "Private key for SSH; its .pub is registered with DigitalOcean."),
    Key("SSH_PORT", "ssh.port", "int", "SSH port on the droplet."),
    Key("SSH_KNOWN_HOSTS", "ssh.known_hosts", "str", "Where droplet host keys are pinned before the first contact (no trust on first use)."),
    Key("SSH_CONNECT_TIMEOUT", "ssh.connect_timeout", "float", "Seconds to wait for an SSH connection."),
    Key("SSH_RETRIES", "ssh.retries", "int", "Connection attempts before SSH is declared unreachable."),
    Key("DO_REQUEST_TIMEOUT", "cloud.request_timeout", "float", "Seconds per DigitalOcean API request."),
    Key("DO_ACTIVE_TIMEOUT", "cloud.active_timeout", "float", "Seconds to wait for a new droplet to become active."),
    Key("DO_SSH_WAIT_TIMEOUT", "cloud.ssh_wait_timeout", "float", "Seconds to wait for SSH on a new droplet."),
    Key("DO_MAX_RETRIES", "cloud.max_retries", "int", "Attempts for transient API errors (429, 5xx, timeouts)."),
    Key("SKIP_ALLOWLIST", "allowlist.skip", "bool", "Do not touch the Cloud Firewall (same as --skip-allowlist)."),
    Key("OPERATOR_IP_URL", "allowlist.operator_ip_url", "str", "URL answering with the operator's public IP, for the SSH allowlist."),
    Key("OPERATOR_IP_TIMEOUT", "allowlist.operator_ip_timeout", "float", "Seconds to wait for OPERATOR_IP_URL."),
    Key("ALLOWLIST_EXTRA_CIDRS", "allowlist.extra_ssh_cidrs", "list", "More CIDRs allowed to reach SSH."),
    Key("ALLOWLIST_TTL", "allowlist.ttl", "float", "Seconds an operator's address stays allowed to reach SSH after their last provision (concurrent deploys keep each other's access)."),
    Key("REMOTE_BASE_DIR", "remote.base_dir", "str", "Release root on the droplet (default /opt/<project>)."),
    Key("RELEASES_KEEP", "remote.releases_keep", "int", "Releases kept on the droplet."),
    Key("CLOUD_INIT_TIMEOUT", "remote.cloud_init_timeout", "float", "Seconds a full deploy waits for cloud-init to finish setting up the droplet (Docker install)."),
    Key("HEALTH_TIMEOUT", "remote.health_timeout", "float", "Seconds for every service to become healthy."),
    Key("LOCK_WAIT", "remote.lock_wait", "float", "Seconds to wait for another deploy's lock before failing."),
    Key("LOCK_TTL", "remote.lock_ttl", "float", "Seconds after which another machine's deploy lock counts as stale for `inv lock.release --if-stale` (longer than any deploy)."),
    Key("MIN_FREE_MB", "remote.min_free_mb", "int", "Free MB the droplet needs under the release root before a push (on a droplet Docker's images share that disk); 0 turns the check off."),
    Key("CHECK_SAMPLES", "checks.samples", "int", "Latency samples per public route."),
    Key("CHECK_TIMEOUT", "checks.timeout", "float", "Seconds per check request."),
    Key("CHECK_P95_BUDGET", "checks.p95_budget", "float", "p95 latency budget in seconds (NFR-007)."),
    Key("CHECK_RATE_LIMIT", "checks.rate_limit_burst", "bool", "Run the rate-limit burst check (NFR-002)."),
    Key("CHECK_CERT_WAIT", "checks.cert_wait", "float", "Seconds the TLS check waits while Traefik still serves its default certificate (ACME issuing right after a Traefik start)."),
    Key("DNS_RESOLVER", "checks.dns_resolver", "list", "Name servers the DNS check asks (IPs or host names, optional :port); `system` uses this machine's resolver. The default, DigitalOcean's authoritative servers, sees a wrong record before caches expire."),
    Key("ACME_CA_SERVER", "acme.ca_server", "str", "ACME directory Traefik gets certificates from. Let's Encrypt staging by default; production is refused; any other CA needs ACME_TEST_CA."),
    Key("ACME_TEST_CA", "acme.test_ca", "bool", "Marks ACME_CA_SERVER as a test CA (e.g. Pebble); required for any CA but Let's Encrypt staging."),
    Key("ACME_TEST_CA_ROOT", "acme.test_ca_root", "str", "PEM file of the CA that signs the test CA's HTTPS listener; shipped to Traefik (LEGO_CA_CERTIFICATES)."),
    Key("LOGS_DIR", "logs.dir", "str", "Where run folders are written."),
    Key("LOGS_TIMESTAMP", "logs.timestamp", "bool", "One new timestamped folder per run; false reuses local_run_logs/latest."),
    Key("STACK_DIR", "stack.dir", "str", "The stack shipped to the droplet."),
)
KEYS_BY_ENV = {k.env: k for k in KEYS}
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False, "": False}


@dataclass(frozen=True)
class Settings:
    """Everything a run needs. Secrets are Secret objects; repr never shows them."""

    values: Mapping[str, Any]
    stack_env: Mapping[str, str | Secret]
    secret_keys: frozenset[str]
    env_file: Path | None
    sources: Mapping[str, str] = field(repr=False)

    def __getitem__(self, env_name: str) -> Any:
        return self.values[env_name]

    @property
    def token(self) -> Secret | None:
        return self.values.get("DIGITALOCEAN_TOKEN")

    @property
    def project(self) -> str:
        return self.values["PROJECT_NAME"]

    @property
    def remote_base(self) -> str:
        return self.values["REMOTE_BASE_DIR"] or f"/opt/{self.project}"

    @property
    def ssh_key_path(self) -> Path:
        return Path(os.path.expanduser(self.values["SSH_KEY_PATH"]))

    @property
    def known_hosts_path(self) -> Path:
        return Path(os.path.expanduser(self.values["SSH_KNOWN_HOSTS"]))

    @property
    def stack_dir(self) -> Path:
        return Path(self.values["STACK_DIR"])

    @property
    def logs_dir(self) -> Path:
        return Path(self.values["LOGS_DIR"])

    @property
    def logs_timestamp(self) -> bool:
        return bool(self.values["LOGS_TIMESTAMP"])

    def snapshot(self) -> dict[str, Any]:
        """The effective settings with their source; secrets masked by type, not by guess."""
        out: dict[str, Any] = {}
        for name, value in self.values.items():
            shown: Any = str(value) if isinstance(value, Secret) else value
            out[name] = {"value": shown if value is not None else None, "source": self.sources.get(name, "default")}
        return out

    def stack_env_file(self) -> str:
        """The env file the stack gets on the droplet: only the keys stack/.env.example names."""
        lines = ["# Written by stackdeploy; only the keys named in stack/.env.example."]
        for key, value in self.stack_env.items():
            raw = value.reveal() if isinstance(value, Secret) else value
            lines.append(f"{key}={_quote_env_value(raw)}")
        return "\n".join(lines) + "\n"

    def require(self, *names: str) -> None:
        """Fail with a ConfigError naming the first missing setting and how to set it."""
        for name in names:
            if not self.values.get(name):
                key = KEYS_BY_ENV[name]
                also = f" (or {', '.join(key.aliases)})" if key.aliases else ""
                where = f"in {self.env_file}" if self.env_file else "in the env file (--env-file)"
                raise ConfigError(name, "is not set", f"set {name}{also} {where} or in the environment. {key.doc}")


def _quote_env_value(value: str) -> str:
    # Compose (and python-dotenv) take single-quoted values literally: no "$" interpolation of
    # htpasswd hashes, no escapes. Only a value holding a single quote needs double quotes,
    # where "$$" is Compose's escape for a literal "$".
    if "'" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    return f'"{escaped}"'


def read_env_file(path: Path) -> dict[str, str]:
    """Parse an env file with python-dotenv; an unparseable line is a ConfigError naming it."""
    problems: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            problems.append(record.getMessage())

    logger = logging.getLogger("dotenv.main")
    handler = _Collect(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        raw = dotenv_values(path, interpolate=False)
    finally:
        logger.removeHandler(handler)
    if problems:
        # dotenv says "could not parse statement starting at line N": name the file and the line,
        # never the content (it may be a secret).
        line = re.search(r"line (\d+)", problems[0])
        where = f"{path}:{line.group(1)}" if line else str(path)
        raise ConfigError("--env-file", f"has a line that cannot be parsed ({where})",
                          "write it as KEY=value, KEY=\"quoted value\" or export KEY=value; comments start with #")
    return {k: (v if v is not None else "") for k, v in raw.items()}


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _convert(key: Key, raw: Any, source: str) -> Any:
    if raw is None:
        return None
    try:
        if key.kind == "bool":
            if isinstance(raw, bool):
                return raw
            return _BOOL_WORDS[str(raw).strip().lower()]
        if key.kind == "int":
            return int(raw)
        if key.kind == "float":
            return float(raw)
        if key.kind == "list":
            if isinstance(raw, (list, tuple)):
                return tuple(str(x) for x in raw)
            return tuple(p.strip() for p in str(raw).split(",") if p.strip())
    except (KeyError, ValueError):
        expected = {"bool": "true or false", "int": "a whole number", "float": "a number"}[key.kind]
        raise ConfigError(key.env, f"from {source} is not {expected}", f"set {key.env} to {expected}") from None
    return str(raw)


def parse_stack_example(path: Path) -> dict[str, str]:
    """Keys (and example values) named in stack/.env.example: the contract with the stack."""
    if not path.is_file():
        return {}
    return read_env_file(path)


def load_settings(
    config: Mapping[str, Any],
    env_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    registry: SecretRegistry | None = None,
    base_dir: Path | None = None,
) -> Settings:
    """Build Settings. ``config`` is the ``deploy`` section of invoke.yaml; ``flags`` uses env names.

    Every secret value seen (from any source) is registered with the redactor before anything
    can be logged, including values of stack keys.
    """
    registry = registry or REGISTRY
    environ = dict(os.environ if environ is None else environ)
    flags = dict(flags or {})
    base = base_dir or Path.cwd()

    explicit_file = env_file is not None
    env_path = Path(env_file) if env_file is not None else base / ".env"
    if not env_path.is_absolute():
        env_path = base / env_path
    file_values: dict[str, str] = {}
    if env_path.is_file():
        file_values = read_env_file(env_path)
    elif explicit_file:
        raise ConfigError("--env-file", f"points to {env_path}, which does not exist",
                          "pass the path of your env file (copy .env.example to .env to start)")

    # Register secrets first, so even a validation error below cannot print one.
    for source_values in (file_values, environ, flags):
        registry.add_mapping({k: v for k, v in source_values.items() if isinstance(v, (str, Secret))})

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        raw, source = None, "default"
        default = _lookup(config, key.path) if key.path else key.default
        if default is not None:
            raw, source = default, "invoke.yaml"
        for name in (key.env, *key.aliases):
            if name in file_values and file_values[name] != "":
                raw, source = file_values[name], f"env file ({name})"
                break
        for name in (key.env, *key.aliases):
            if environ.get(name):
                raw, source = environ[name], f"environment ({name})"
                break
        if flags.get(key.env) is not None:
            raw, source = flags[key.env], "flag"
        value = _convert(key, raw, source)
        if key.secret and value:
            value = Secret(value)
            registry.add_name(key.env)
            registry.add_value(value)
        values[key.env] = value
        sources[key.env] = source

    _validate(values)

    logs_dir = Path(values["LOGS_DIR"] or "local_run_logs")
    values["LOGS_DIR"] = str(logs_dir if logs_dir.is_absolute() else base / logs_dir)
    stack_dir = Path(values["STACK_DIR"] or "stack")
    if not stack_dir.is_absolute():
        stack_dir = base / stack_dir
        values["STACK_DIR"] = str(stack_dir)
    example = parse_stack_example(stack_dir / ".env.example")
    stack_env: dict[str, str | Secret] = {}
    secret_keys = {k.env for k in KEYS if k.secret}
    for name, example_value in example.items():
        if name in values and values[name] is not None:
            raw_value: Any = values[name]
            raw_value = raw_value.reveal() if isinstance(raw_value, Secret) else raw_value
            raw_value = ",".join(raw_value) if isinstance(raw_value, tuple) else str(raw_value)
        else:
            raw_value = environ.get(name) or file_values.get(name) or ""
        # Non-secret example values are sensible defaults; a secret's example value never is.
        if not raw_value and example_value and not is_secret_name(name) and not _PLACEHOLDER.search(example_value):
            raw_value = example_value
        if is_secret_name(name):
            secret_keys.add(name)
            registry.add_name(name)
            registry.add_value(raw_value)
            stack_env[name] = Secret(raw_value)
        else:
            stack_env[name] = raw_value
    stack_env.update({k: v for k, v in acme.stack_values(values).items() if k in example})

    where = f"{env_path if env_path.is_file() else 'the env file (--env-file)'} or in the environment"
    for name, value in [(k.env, values[k.env]) for k in KEYS if k.secret] + list(stack_env.items()):
        if isinstance(value, Secret) and value:
            _refuse_weak_secret(name, value.reveal(), example.get(name, ""), where)
    _check_app_role(stack_env, where)

    return Settings(values=values, stack_env=stack_env, secret_keys=frozenset(secret_keys),
                    env_file=env_path if env_path.is_file() else None, sources=sources)


# Stack secrets that must be long random values, and their minimum length.
_RANDOM_SECRETS = {"DJANGO_SECRET_KEY": 32, "INTERNAL_API_TOKEN": 32, "POSTGRES_PASSWORD": 16,
                   "POSTGRES_APP_PASSWORD": 32, "REDIS_PASSWORD": 32}
# Secrets compose puts into URLs (redis://:PASSWORD@redis:6379/0): no character that needs escaping.
_URL_SECRETS = ("REDIS_PASSWORD",)
_URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
# A PostgreSQL role name app-role.sh can use unquoted in messages and the operator in psql.
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# A random value of 16 or more characters practically never has fewer different characters.
_MIN_DISTINCT_CHARACTERS = 8
_TOKEN_COMMAND = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
_DO_TOKENS_PAGE = "https://cloud.digitalocean.com/account/api/tokens"
# Basic-auth settings hold one htpasswd line, user:bcrypt-hash (Traefik checks $2y$, $2b$, $2a$);
# the older apr1/SHA1 forms are cheap to brute-force once a hash leaks.
_BASIC_AUTH_SECRETS = ("FLOWER_BASIC_AUTH", "ADMIN_BASIC_AUTH")
_BCRYPT_LINE = re.compile(r"^[^:\s]+:\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
_BCRYPT_COMMAND = ("htpasswd -nbB admin 'a long password' (apache2-utils), or python3 -c 'import bcrypt; "
                   "print(\"admin:\" + bcrypt.hashpw(b\"a long password\", bcrypt.gensalt()).decode())'")


def _refuse_weak_secret(name: str, value: str, example_value: str, where: str) -> None:
    """ConfigError when a secret is a placeholder, guessable, or too short or common to be
    masked in logs (the redactor masks such values only where they stand as a value)."""
    problem = _weakness(name, value, example_value)
    if problem is None:
        return
    if name in _BASIC_AUTH_SECRETS:
        fix = f"make the line with: {_BCRYPT_COMMAND}; then set {name} to it, in single quotes, in {where}"
    elif name == "DIGITALOCEAN_TOKEN":
        fix = f"create a read+write token at {_DO_TOKENS_PAGE} and set {name} to it in {where}"
    else:
        fix = f"generate a value with: {_TOKEN_COMMAND}; then set {name} to it in {where}"
    raise ConfigError(name, problem, fix)


def _weakness(name: str, value: str, example_value: str) -> str | None:
    if value == example_value or _PLACEHOLDER.search(value):
        return "is a placeholder or the example value from stack/.env.example"
    if name in _BASIC_AUTH_SECRETS:
        if not _BCRYPT_LINE.match(value):
            return "is not a bcrypt htpasswd line (user:$2y$..., as htpasswd -B writes it)"
        return None
    minimum = _RANDOM_SECRETS.get(name)
    if minimum is None:
        if not is_distinctive(value):
            return (f"is too short or too common to be masked in logs (at least {MIN_SECRET_VALUE_LENGTH} "
                    f"characters, and {DISTINCTIVE_ONE_CLASS_LENGTH} for a lone word or number)")
        return None
    if len(value) < minimum:
        return f"is too short: {len(value)} characters, at least {minimum} are needed"
    if name in _URL_SECRETS and not _URL_SAFE.match(value):
        return "has characters a redis:// URL would need escaped: use letters, digits, - and _ only"
    if char_classes(value) < 2:
        return "uses one kind of character only (all letters or all digits): too easy to guess"
    if len(set(value)) < _MIN_DISTINCT_CHARACTERS:
        return (f"repeats too few different characters ({len(set(value))}; a random value has at "
                f"least {_MIN_DISTINCT_CHARACTERS})")
    return None


def _check_app_role(stack_env: Mapping[str, Any], where: str) -> None:
    """The app's PostgreSQL role must be a plain name and not the superuser itself."""
    app, superuser = str(stack_env.get("POSTGRES_APP_USER") or ""), str(stack_env.get("POSTGRES_USER") or "")
    if not app:
        return  # a missing stack key is reported by require_stack_keys, with the others
    if not _ROLE_NAME.match(app):
        raise ConfigError("POSTGRES_APP_USER", f"={app!r} is not a plain role name",
                          f"use lower-case letters, digits and _ (e.g. stack_app) in {where}")
    if app == superuser:
        raise ConfigError("POSTGRES_APP_USER", "is the same role as POSTGRES_USER (the superuser)",
                          f"set POSTGRES_APP_USER to another name, e.g. stack_app, in {where}; "
                          "the stack creates that role and hands it the database")


_REQUIRED_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?")


def required_stack_keys(stack_dir: Path) -> set[str]:
    """Keys the compose files demand with ${KEY:?message}: Compose would refuse to start without them."""
    found: set[str] = set()
    for path in sorted(stack_dir.glob("compose*.yml")):
        found.update(_REQUIRED_REF.findall(path.read_text(encoding="utf-8")))
    return found


def missing_stack_keys(settings: Settings) -> list[str]:
    """Stack keys that are empty or still a placeholder while the stack needs them (a required
    key, or any secret that is set to an example placeholder): push refuses to ship them."""
    required = required_stack_keys(settings.stack_dir)
    missing = []
    for name, value in settings.stack_env.items():
        raw = value.reveal() if isinstance(value, Secret) else value
        if (name in required and not raw) or (raw and _PLACEHOLDER.search(raw)):
            missing.append(name)
    return missing


def require_stack_keys(settings: Settings) -> None:
    """ConfigError naming every stack key that is missing or still a placeholder."""
    missing = missing_stack_keys(settings)
    if missing:
        raise ConfigError(missing[0], "is empty or still a placeholder (stack/.env.example names it)",
                          f"set {', '.join(missing)} in {settings.env_file or 'the env file'}")


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "DEPLOY_ENV": lambda v: None if v in DEPLOY_ENVS else f"must be one of {', '.join(DEPLOY_ENVS)}",
    "DOMAIN": lambda v: None if v is None or _HOSTNAME.match(v) else "is not a valid host name (lower case, dots, no scheme or path)",
    "DIGITALOCEAN_END_POINT": lambda v: None if v is None or (re.match(r"^https?://", v) and v.endswith("/v2/")) else "must be an http(s) URL ending in /v2/",
    "SSH_PORT": lambda v: None if 0 < v < 65536 else "must be a port number",
    "RELEASES_KEEP": lambda v: None if v >= 2 else "must be at least 2 (the current release and one to roll back to)",
    "CHECK_SAMPLES": lambda v: None if v >= 1 else "must be at least 1",
    "NODES": lambda v: None if 1 <= v <= 25 else "must be 1 to 25 (a DigitalOcean account's default droplet limit)",
    "REGISTRY_NAME": lambda v: None if v and re.match(r"^[a-z0-9-]{1,63}$", v) else "must be 1 to 63 lower-case letters, digits or dashes",
    "CHECK_CERT_WAIT": lambda v: None if 0 <= v <= 600 else "must be 0 to 600 seconds",
    "MIN_FREE_MB": lambda v: None if v >= 0 else "must be 0 or more",
    "ALLOWLIST_TTL": lambda v: None if v >= 600 else "must be at least 600 seconds (longer than a deploy)",
    "LOCK_TTL": lambda v: None if v >= 600 else "must be at least 600 seconds (a deploy must never outlive it)",
    "DROPLET_IP": lambda v: None if not v or _is_ip(v) else f"is {v!r}, which is not an IP address",
}
_FIXES = {
    "DEPLOY_ENV": "set DEPLOY_ENV=production (default), staging or development",
    "DOMAIN": "set DOMAIN to the bare host name, e.g. DOMAIN=app.example.com",
    "DIGITALOCEAN_END_POINT": "unset it for the real API, or use e.g. http://127.0.0.1:8765/v2/ (inv lab.env prints it)",
    "SSH_PORT": "set SSH_PORT to 22 or the droplet's SSH port",
    "RELEASES_KEEP": "set RELEASES_KEEP=5",
    "CHECK_SAMPLES": "set CHECK_SAMPLES=5",
    "NODES": "set NODES=1 for one droplet, or 3 for a swarm that survives the loss of a node",
    "REGISTRY_NAME": "set REGISTRY_NAME to your registry's name, e.g. REGISTRY_NAME=acme",
    "CHECK_CERT_WAIT": "set CHECK_CERT_WAIT=60 (0 turns the wait off)",
    "MIN_FREE_MB": "set MIN_FREE_MB=1024 (0 turns the check off)",
    "ALLOWLIST_TTL": "set ALLOWLIST_TTL=10800 (three hours)",
    "LOCK_TTL": "set LOCK_TTL=10800 (three hours), longer than your slowest deploy",
    "DROPLET_IP": "set DROPLET_IP to the droplet's public IPv4 (e.g. 203.0.113.10), or unset it to find the droplet by name",
}


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _validate(values: Mapping[str, Any]) -> None:
    for name, check in _CHECKS.items():
        value = values.get(name)
        if value is None and name not in ("DOMAIN", "DIGITALOCEAN_END_POINT"):
            continue
        problem = check(value)
        if problem:
            raise ConfigError(name, problem, _FIXES[name])
    acme.validate(values)
    resolvers.parse(values.get("DNS_RESOLVER") or ())


def reference_markdown(config: Mapping[str, Any]) -> str:
    """The configuration reference table for the README (python -m deploy.settings)."""
    rows = ["| key | default (invoke.yaml key) | secret | meaning |", "|---|---|---|---|"]
    for k in KEYS:
        names = " / ".join(f"`{n}`" for n in (k.env, *k.aliases))
        default = _lookup(config, k.path) if k.path else None
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        where = f"`{shown}` (deploy.{k.path})" if k.path else "-"
        rows.append(f"| {names} | {where} | {'yes' if k.secret else 'no'} | {k.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import yaml

    invoke_yaml = Path(__file__).resolve().parent.parent / "invoke.yaml"
    print(reference_markdown(yaml.safe_load(invoke_yaml.read_text())["deploy"]))
