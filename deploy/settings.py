"""invoke.yaml + env file + environment + task flags -> one frozen, validated, typed Settings.

Precedence, highest first: task flags, real environment variables, the env file, invoke.yaml,
built-in defaults. Real environment variables win over the env file (python-dotenv's
``override=False`` convention), so a CI secret store can override a checked-out file.

One declaration per setting
---------------------------
Every setting is one typed field of ``Settings`` below, declared with ``setting(...)``: its
type (the annotation), its built-in default, its help text, whether it is secret, its aliases,
where invoke.yaml may override it, and its validation (a check returning the problem, and the
fix to print). Everything else is derived from those fields:

* ``KEYS`` (the table of declarations, by env name: taskrun, the docs and the tests read it);
* parsing and validation in ``load_settings``;
* the configuration table (``python -m deploy.settings``) and the root .env.example
  (``python -m deploy.settings --env-example``); tests/core/test_docs.py and
  tests/core/test_env_example.py fail when the committed copies drift.

The defaults live here only: invoke.yaml holds the operator's overrides, so a value whose
source is ``default`` was not set by anyone (``settings.is_set("NODES")``) and the two cannot
disagree (tests/core/test_settings.py refuses an invoke.yaml key that is not declared or that
repeats its default).

Attributes are declared dataclass fields, so ``settings.nodes`` is an ``int`` to mypy and
``settings.nodez`` is an error there (and an AttributeError at run time); no ``__getattr__``.

Why not pydantic-settings
-------------------------
It was considered (it is the usual answer, and it is installed here as a test-only
dependency of openapi-core). It would have replaced the declaration syntax and little else,
and every requirement this module has would have needed an override of it:

* Env file: pydantic-settings calls ``dotenv_values(path)`` with interpolation on and lets
  python-dotenv's "could not parse" warnings go to logging. Ours reads with
  ``interpolate=False`` (bcrypt lines and passwords hold ``$``) and turns an unparseable line
  into a ConfigError naming file:line but never the content. We would replace its dotenv
  source, i.e. the part that is "already integrated".
* Precedence and empty values: an empty value in the env file or environment means "unset"
  here, aliases count at each level, and invoke.yaml is a nested section addressed by dotted
  paths. That is five custom sources (flags, environment, env file, yaml, defaults), which is
  the loop below.
* ``Settings.sources`` (where each value came from, used by ``is_set`` and the run's
  settings.json) has no counterpart: pydantic-settings merges its sources and forgets which
  one won.
* Secrets: ours are ``deploy.redact.Secret`` objects registered with the redaction registry
  *before* any validation can print; pydantic's ``ValidationError`` text carries the input
  value, so every error would have to be caught and rewritten into a ConfigError naming the
  setting and the fix anyway, and SecretStr would have to be converted at the boundary.
* Lists: pydantic-settings decodes list fields from the environment as JSON unless each is
  marked ``NoDecode``; ours are comma-separated.
* Dependency: pydantic and its compiled core would become runtime dependencies of the
  deployer (today: invoke, fabric, python-dotenv, PyYAML, ...) for 48 flat scalar settings.

What the issue wanted from it (one typed declaration, attribute access, validation next to
the field, generated docs) is what the dataclass below gives, in about the same lines.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypedDict

from dotenv import dotenv_values

from core.errors import ConfigError
from deploy import acme, backup_config, resolvers, secret_rules
from deploy.redact import REGISTRY, Secret, SecretRegistry, is_secret_name
from deploy.secret_rules import PLACEHOLDER
from deploy.tls import STAGING_CA_URL
from remote.edge_config import DIR_VAR as EDGE_CONFIG_DIR

DEPLOY_ENVS = ("production", "staging", "development")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")
_REGISTRY_NAME = re.compile(r"^[a-z0-9-]{1,63}$")

Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Key:
    """One setting as derived from its field of Settings (see ``setting``)."""

    env: str
    path: str | None
    kind: str  # str | int | float | bool | list | path | secret
    doc: str
    secret: bool = False
    aliases: tuple[str, ...] = ()
    default: Any = None
    attr: str = ""
    check: Check | None = None
    fix: str = ""
    example: str | None = None
    base_relative: bool = False


def setting(default: Any, doc: str, *, path: str | None = None, secret: bool = False,
            aliases: tuple[str, ...] = (), check: Check | None = None, fix: str = "",
            example: str | None = None, base_relative: bool = False) -> Any:
    """Declare one setting (a field of Settings; its env name is the field name upper-cased).

    ``path``: where invoke.yaml's ``deploy:`` section may override it. ``check``: returns the
    problem (or None) for a converted value that is not None; ``fix`` says how to correct it.
    ``example``: put uncommented into .env.example with this value (an essential setting).
    ``base_relative``: a relative path is taken from the project directory.
    """
    meta = {"doc": doc, "path": path, "secret": secret, "aliases": aliases, "check": check, "fix": fix,
            "example": example, "base_relative": base_relative}
    return field(default=default, metadata={"setting": meta})


def _ip_problem(value: str) -> str | None:
    if not value:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"is {value!r}, which is not an IP address"
    return None


def _resolvers_problem(value: tuple[str, ...]) -> str | None:
    resolvers.parse(value)  # raises its own ConfigError, naming the bad entry
    return None


def _at_least(low: float, why: str = "") -> Check:
    return lambda v: None if v >= low else f"must be at least {low:g}{why}"


def _between(low: float, high: float, what: str) -> Check:
    return lambda v: None if low <= v <= high else f"must be {low:g} to {high:g}{what}"


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, typed. Secrets are Secret objects; repr never shows them.

    The declared fields come first, in the order of the configuration table; the last five
    fields are what load_settings adds (the stack's env file, where each value came from, ...).
    """

    digitalocean_token: Secret | None = setting(
        None, "DigitalOcean API token (read+write). Required for deploy and provision.",
        secret=True, aliases=("DIGITALOCEAN_ACCESS_TOKEN",), example="")
    digitalocean_end_point: str | None = setting(
        None, "API endpoint, ending in /v2/ (python-digitalocean's own variable); the lab sets it.",
        check=lambda v: None if re.match(r"^https?://", v) and v.endswith("/v2/") else "must be an http(s) URL ending in /v2/",
        fix="unset it for the real API, or use e.g. http://127.0.0.1:8765/v2/ (inv lab.env prints it)")
    domain: str | None = setting(
        None, "Public host name of the stack, e.g. app.example.com. Required.",
        check=lambda v: None if _HOSTNAME.match(v) else "is not a valid host name (lower case, dots, no scheme or path)",
        fix="set DOMAIN to the bare host name, e.g. DOMAIN=app.example.com", example="app.example.com")
    deploy_env: str = setting(
        "production", "production, staging or development; the admin router exists only outside production.",
        path="deploy_env", check=lambda v: None if v in DEPLOY_ENVS else f"must be one of {', '.join(DEPLOY_ENVS)}",
        fix="set DEPLOY_ENV=production (default), staging or development", example="production")
    project_name: str = setting(
        "stackdeploy", "Compose project name and /opt/<project> on the droplet.", path="project")
    subdomains: tuple[str, ...] = setting(
        ("flower", "admin"), "Comma-separated subdomains given A records beside the apex.", path="subdomains")
    droplet_name: str = setting("stackdeploy-1", "Droplet to find or create.", path="droplet.name")
    droplet_region: str = setting("fra1", "Region slug for a new droplet.", path="droplet.region")
    droplet_size: str = setting("s-2vcpu-4gb", "Size slug for a new droplet.", path="droplet.size")
    droplet_image: str = setting(
        "ubuntu-24-04-x64", "Image slug for a new droplet (an Ubuntu LTS).", path="droplet.image")
    droplet_tags: tuple[str, ...] = setting(
        ("stackdeploy",), "Comma-separated tags put on the droplet and used to find it.", path="droplet.tags")
    nodes: int | None = setting(
        None, "Droplets the stack runs on: 1 is one droplet with Docker Compose; more form a Docker Swarm "
              "(same tag, same VPC), images through the container registry (same as `--nodes`). Unset: as many "
              "as the cluster has (1 for a new stack); another number is a scale request, which only a full "
              "deploy carries out.",
        path="droplet.nodes", check=_between(1, 25, " (a DigitalOcean account's default droplet limit)"),
        fix="set NODES=1 for one droplet, or 3 for a swarm that survives the loss of a node")
    registry_name: str = setting(
        "stackdeploy", "DigitalOcean Container Registry the swarm's images go through (NODES > 1); "
                       "created if the account has none (one per account).",
        path="registry.name",
        check=lambda v: None if _REGISTRY_NAME.match(v) else "must be 1 to 63 lower-case letters, digits or dashes",
        fix="set REGISTRY_NAME to your registry's name, e.g. REGISTRY_NAME=acme")
    droplet_ip: str | None = setting(
        None, "Skip IP discovery and use this address (verify without API access).", check=_ip_problem,
        fix="set DROPLET_IP to the droplet's public IPv4 (e.g. 203.0.113.10), or unset it to find the droplet by name")
    deploy_user: str = setting(
        "deploy", "SSH user on the droplet (created by cloud-init, in the docker group).", path="ssh.user")
    ssh_key_path: Path = setting(
        Path("~/.ssh/id_ed25519"), "Private key for SSH; its .pub is registered with DigitalOcean.",
        path="ssh.key_path", example="~/.ssh/id_ed25519")
    ssh_port: int = setting(
        22, "SSH port on the droplet.", path="ssh.port",
        check=lambda v: None if 0 < v < 65536 else "must be a port number", fix="set SSH_PORT to 22 or the droplet's SSH port")
    ssh_known_hosts: Path = setting(
        Path("~/.config/stackdeploy/known_hosts"),
        "Where droplet host keys are pinned before the first contact (no trust on first use).", path="ssh.known_hosts")
    ssh_connect_timeout: float = setting(10, "Seconds to wait for an SSH connection.", path="ssh.connect_timeout")
    ssh_retries: int = setting(3, "Connection attempts before SSH is declared unreachable.", path="ssh.retries")
    do_request_timeout: float = setting(15, "Seconds per DigitalOcean API request.", path="cloud.request_timeout")
    do_active_timeout: float = setting(
        300, "Seconds to wait for a new droplet to become active.", path="cloud.active_timeout")
    do_ssh_wait_timeout: float = setting(
        300, "Seconds to wait for SSH on a new droplet.", path="cloud.ssh_wait_timeout")
    do_max_retries: int = setting(
        5, "Attempts for transient API errors (429, 5xx, timeouts).", path="cloud.max_retries")
    skip_allowlist: bool = setting(
        False, "Do not touch the Cloud Firewall (same as --skip-allowlist).", path="allowlist.skip")
    skip_backup: bool = setting(
        False, "Migrate without the backup a deploy takes before applying new migrations (same as "
               "--skip-backup; written in run.json and the summary).", path="backups.skip_before_migrate")
    operator_ip_url: str = setting(
        "https://api.ipify.org", "URL answering with the operator's public IP, for the SSH allowlist.",
        path="allowlist.operator_ip_url")
    operator_ip_timeout: float = setting(
        5, "Seconds to wait for OPERATOR_IP_URL.", path="allowlist.operator_ip_timeout")
    allowlist_extra_cidrs: tuple[str, ...] = setting(
        (), "More CIDRs allowed to reach SSH.", path="allowlist.extra_ssh_cidrs")
    allowlist_ttl: float = setting(
        10800, "Seconds an operator's address stays allowed to reach SSH after their last provision "
               "(concurrent deploys keep each other's access).",
        path="allowlist.ttl", check=_at_least(600, " seconds (longer than a deploy)"),
        fix="set ALLOWLIST_TTL=10800 (three hours)")
    remote_base_dir: str = setting(
        "", "Release root on the droplet (default /opt/<project>).", path="remote.base_dir")
    releases_keep: int = setting(
        5, "Releases kept on the droplet.", path="remote.releases_keep",
        check=_at_least(2, " (the current release and one to roll back to)"), fix="set RELEASES_KEEP=5")
    cloud_init_timeout: float = setting(
        900, "Seconds a full deploy waits for cloud-init to finish setting up the droplet (Docker install).",
        path="remote.cloud_init_timeout")
    health_timeout: float = setting(
        600, "Seconds for every service to become healthy.", path="remote.health_timeout")
    lock_wait: float = setting(
        0, "Seconds to wait for another deploy's lock before failing.", path="remote.lock_wait")
    lock_ttl: float = setting(
        10800, "Seconds after which another machine's deploy lock counts as stale for "
               "`inv lock.release --if-stale` (longer than any deploy).",
        path="remote.lock_ttl", check=_at_least(600, " seconds (a deploy must never outlive it)"),
        fix="set LOCK_TTL=10800 (three hours), longer than your slowest deploy")
    min_free_mb: int = setting(
        1024, "Free MB the droplet needs under the release root before a push (on a droplet Docker's "
              "images share that disk); 0 turns the check off.",
        path="remote.min_free_mb", check=lambda v: None if v >= 0 else "must be 0 or more",
        fix="set MIN_FREE_MB=1024 (0 turns the check off)")
    check_samples: int = setting(
        5, "Latency samples per public route.", path="checks.samples", check=_at_least(1),
        fix="set CHECK_SAMPLES=5")
    check_timeout: float = setting(10, "Seconds per check request.", path="checks.timeout")
    check_p95_budget: float = setting(5.0, "p95 latency budget in seconds (NFR-007).", path="checks.p95_budget")
    check_rate_limit: bool = setting(
        True, "Run the rate-limit burst check (NFR-002).", path="checks.rate_limit_burst")
    check_cert_wait: float = setting(
        60, "Seconds the TLS check waits while Traefik still serves its default certificate "
            "(ACME issuing right after a Traefik start).",
        path="checks.cert_wait", check=_between(0, 600, " seconds"), fix="set CHECK_CERT_WAIT=60 (0 turns the wait off)")
    dns_resolver: tuple[str, ...] = setting(
        ("ns1.digitalocean.com", "ns2.digitalocean.com", "ns3.digitalocean.com"),
        "Name servers the DNS check asks (IPs or host names, optional :port); `system` uses this "
        "machine's resolver. The default, DigitalOcean's authoritative servers, sees a wrong record "
        "before caches expire.", path="checks.dns_resolver", check=_resolvers_problem)
    acme_ca_server: str = setting(
        STAGING_CA_URL, "ACME directory Traefik gets certificates from. Let's Encrypt staging by default; "
                        "production is refused; any other CA needs ACME_TEST_CA.", path="acme.ca_server")
    acme_test_ca: bool = setting(
        False, "Marks ACME_CA_SERVER as a test CA (e.g. Pebble); required for any CA but Let's Encrypt staging.",
        path="acme.test_ca")
    acme_test_ca_root: str = setting(
        "", "PEM file of the CA that signs the test CA's HTTPS listener; shipped to Traefik (LEGO_CA_CERTIFICATES).",
        path="acme.test_ca_root")
    spaces_test_ca_root: str = setting(
        "", "PEM file of the CA that signs a test S3 endpoint (the lab's) in place of Spaces; shipped to "
            "PostgreSQL's pgBackRest (SPACES_CA_FILE).", path="backups.test_ca_root")
    logs_dir: Path = setting(
        Path("local_run_logs"), "Where run folders are written.", path="logs.dir", base_relative=True)
    logs_timestamp: bool = setting(
        True, "One new timestamped folder per run; false reuses local_run_logs/latest.", path="logs.timestamp")
    stack_dir: Path = setting(
        Path("stack"), "The stack shipped to the droplet.", path="stack.dir", base_relative=True)

    # --- not settings: what load_settings adds --------------------------------------------
    stack_env: Mapping[str, str | Secret] = field(default_factory=dict)
    secret_keys: frozenset[str] = frozenset()
    env_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict, repr=False)
    # By env name, as converted (paths as written): the snapshot and require() read it.
    values: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def source(self, env_name: str) -> str:
        """Where the value came from: flag, environment (NAME), env file (NAME), invoke.yaml or default."""
        _key(env_name)
        return self.sources.get(env_name, "default")

    def is_set(self, env_name: str) -> bool:
        """True when the operator set the setting (task flag, environment, env file or invoke.yaml),
        False when it is the built-in default. ``settings.is_set("NODES")``."""
        return self.source(env_name) != "default"

    @property
    def token(self) -> Secret | None:
        return self.digitalocean_token

    @property
    def project(self) -> str:
        return self.project_name

    @property
    def remote_base(self) -> str:
        return self.remote_base_dir or f"/opt/{self.project}"

    @property
    def known_hosts_path(self) -> Path:
        return self.ssh_known_hosts

    def snapshot(self) -> dict[str, Any]:
        """The effective settings with their source; secrets masked by type, not by guess."""
        out: dict[str, Any] = {}
        for name, value in self.values.items():
            shown: Any = str(value) if isinstance(value, Secret) else value
            out[name] = {"value": shown if value is not None else None, "source": self.sources.get(name, "default")}
        return out

    def stack_env_file(self, overrides: Mapping[str, str] | None = None) -> str:
        """The env file the stack gets on the droplet: only the keys stack/.env.example names
        (``overrides``: values the deployer fills, e.g. a rotated key's fallback)."""
        lines = ["# Written by stackdeploy; only the keys named in stack/.env.example."]
        for key, value in self.stack_env.items():
            raw = value.reveal() if isinstance(value, Secret) else value
            raw = (overrides or {}).get(key, raw)
            lines.append(f"{key}={_quote_env_value(raw)}")
        return "\n".join(lines) + "\n"

    def require(self, *names: str) -> None:
        """Fail with a ConfigError naming the first missing setting and how to set it."""
        for name in names:
            if not self.values.get(name):
                key = _key(name)
                also = f" (or {', '.join(key.aliases)})" if key.aliases else ""
                where = f"in {self.env_file}" if self.env_file else "in the env file (--env-file)"
                raise ConfigError(name, "is not set", f"set {name}{also} {where} or in the environment. {key.doc}")


# The annotation of a declared field -> how a raw value (env text, yaml value, flag) is converted.
_KINDS = {"str": "str", "str | None": "str", "int": "int", "int | None": "int", "float": "float", "bool": "bool",
          "tuple[str, ...]": "list", "Path": "path", "Secret | None": "secret"}


def _declared(f: dataclasses.Field) -> Key:
    meta = f.metadata["setting"]
    if f.type not in _KINDS:
        raise TypeError(f"Settings.{f.name}: no conversion for the type {f.type!r}; known: {', '.join(_KINDS)}")
    return Key(env=f.name.upper(), kind=_KINDS[str(f.type)], default=f.default, attr=f.name, **meta)


KEYS: tuple[Key, ...] = tuple(_declared(f) for f in dataclasses.fields(Settings) if "setting" in f.metadata)
KEYS_BY_ENV = {k.env: k for k in KEYS}
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False, "": False}


def _key(env_name: str) -> Key:
    try:
        return KEYS_BY_ENV[env_name]
    except KeyError:
        raise KeyError(f"{env_name!r} is not a setting (declared in deploy/settings.py: {', '.join(KEYS_BY_ENV)})") from None


class Flags(TypedDict, total=False):
    """Task flags (tasks.py), keyed by setting name: mypy refuses a misspelt key. They win over
    every other source; load_settings refuses a name that is not a setting."""

    NODES: int
    DEPLOY_ENV: str
    SKIP_ALLOWLIST: bool
    LOGS_TIMESTAMP: bool


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
    return str(raw)  # str, path (a string until load_settings makes the Path) and secret


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
    """Build Settings. ``config`` is the ``deploy`` section of invoke.yaml; ``flags`` uses
    setting names (see ``Flags``).

    Every secret value seen (from any source) is registered with the redactor before anything
    can be logged, including values of stack keys.
    """
    registry = registry or REGISTRY
    environ = dict(os.environ if environ is None else environ)
    flags = dict(flags or {})
    base = base_dir or Path.cwd()
    unknown = sorted(set(flags) - set(KEYS_BY_ENV))
    if unknown:
        raise ValueError(f"task flags name no setting: {', '.join(unknown)} (see deploy.settings.Flags)")

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
        raw, source = key.default, "default"
        overridden = _lookup(config, key.path) if key.path else None
        if overridden is not None:
            raw, source = overridden, "invoke.yaml"
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
        if key.base_relative and value is not None and not Path(value).is_absolute():
            value = str(base / value)
        values[key.env] = value
        sources[key.env] = source

    for key in KEYS:
        value = values[key.env]
        problem = key.check(value) if key.check is not None and value is not None else None
        if problem:
            raise ConfigError(key.env, problem, key.fix)
    typed: dict[str, Any] = {k.attr: (Path(os.path.expanduser(values[k.env])) if k.kind == "path" else values[k.env]) for k in KEYS}
    settings = Settings(**typed, sources=sources, values=values)
    acme.validate(settings)  # the checks that involve several settings

    stack_dir = settings.stack_dir
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
        if not raw_value and example_value and not is_secret_name(name) and not PLACEHOLDER.search(example_value):
            raw_value = example_value
        if is_secret_name(name):
            secret_keys.add(name)
            registry.add_name(name)
            registry.add_value(raw_value)
            stack_env[name] = Secret(raw_value)
        else:
            stack_env[name] = raw_value
    stack_env.update({k: v for k, v in acme.stack_values(settings).items() if k in example})
    stack_env.update({k: v for k, v in backup_config.stack_values(settings, stack_env).items() if k in example})

    where = f"{env_path if env_path.is_file() else 'the env file (--env-file)'} or in the environment"
    backup_config.validate(settings, stack_env, where)
    for name, value in [(k.env, values[k.env]) for k in KEYS if k.secret] + list(stack_env.items()):
        if isinstance(value, Secret) and value:
            secret_rules.refuse_weak_secret(name, value.reveal(), example.get(name, ""), where)
    secret_rules.check_app_role(stack_env, where)

    return dataclasses.replace(settings, stack_env=stack_env, secret_keys=frozenset(secret_keys),
                               env_file=env_path if env_path.is_file() else None)


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
    # The deployer fills EDGE_CONFIG_DIR in every release's env (deploy/steps.py::release_env).
    required = required_stack_keys(settings.stack_dir) - {EDGE_CONFIG_DIR}
    missing = []
    for name, value in settings.stack_env.items():
        raw = value.reveal() if isinstance(value, Secret) else value
        if (name in required and not raw) or (raw and PLACEHOLDER.search(raw)):
            missing.append(name)
    return missing


def require_stack_keys(settings: Settings) -> None:
    """ConfigError naming every stack key that is missing or still a placeholder."""
    missing = missing_stack_keys(settings)
    if missing:
        raise ConfigError(missing[0], "is empty or still a placeholder (stack/.env.example names it)",
                          f"set {', '.join(missing)} in {settings.env_file or 'the env file'}")
