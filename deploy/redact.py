"""The single redaction function, and the Secret type it learns from.

Redaction works three ways, strongest first (pyinfra's habit: know which values are secret
rather than guess afterwards):

1. by value: every secret value loaded anywhere in the run is replaced wherever it appears
   (also URL-encoded and base64 forms, so a Basic-auth header or a DSN cannot leak it);
2. by key: ``KEY=value``, ``KEY: value`` and ``"KEY": "value"`` where KEY is secret-named;
3. by shape: DigitalOcean tokens, ``user:password@`` in URLs, PEM private keys, htpasswd
   hashes and Authorization headers, for secrets we were never told about.
"""
from __future__ import annotations

import base64
import re
import threading
from typing import Any, Mapping
from urllib.parse import quote, quote_plus

MASK = "***REDACTED***"

# Words that make a setting secret; explicit exceptions below keep paths and public names readable.
SECRET_NAME_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASS", "KEY", "AUTH", "CREDENTIAL")
KNOWN_NON_SECRET_NAMES = frozenset({
    "SSH_KEY_PATH",
    "SSH_KEY_NAME",
    "SSH_PUBLIC_KEY_PATH",
    "DIGITALOCEAN_END_POINT",
    "AUTH_USER",
    "FLOWER_USER",
    "ADMIN_USER",
    "KEYS",
    "PASSWORD_MIN_LENGTH",
    "OPERATOR_IP_URL",
})

# Values shorter than this are too common ("on", "1", "prod") to replace everywhere safely.
MIN_SECRET_VALUE_LENGTH = 6


class Secret:
    """A string that masks itself when printed, formatted or repr'd. Call reveal() to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def is_secret_name(name: str) -> bool:
    """True for setting names that hold secrets (TOKEN, PASSWORD, ... unless known harmless)."""
    upper = name.upper()
    if upper in KNOWN_NON_SECRET_NAMES or upper.endswith("_PATH") or upper.endswith("_URL"):
        return False
    return any(word in upper for word in SECRET_NAME_WORDS)


_SHAPES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.S),
     "-----BEGIN PRIVATE KEY-----" + MASK + "-----END PRIVATE KEY-----"),
    (re.compile(r"\bdo[opr]_v1_[A-Za-z0-9]{16,}"), MASK),
    # scheme://user:password@host -> keep the user, mask the password.
    (re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:)[^\s@/]+(?=@)"), r"\g<pre>" + MASK),
    # htpasswd hashes: apr1/md5, bcrypt, sha1, sha-crypt.
    (re.compile(r"\$(?:apr1|1|2[abxy]?|5|6)\$[./A-Za-z0-9$]{8,}"), MASK),
    (re.compile(r"\{SHA\}[A-Za-z0-9+/=]{20,}"), MASK),
    (re.compile(r"(?i)(?P<pre>\bauthorization\s*[:=]\s*(?:basic|bearer|token)\s+)[^\s\"',]+"), r"\g<pre>" + MASK),
    (re.compile(r"(?i)(?P<pre>\bbearer\s+)[A-Za-z0-9._~+/=-]{12,}"), r"\g<pre>" + MASK),
]

# KEY=value / KEY: value / "KEY": "value" where KEY is secret-named (checked by is_secret_name).
_KEY_VALUE = re.compile(
    r"""(?P<pre>(?P<q>["']?)(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)(?P=q)\s*(?:=|:)[ \t]*)"""
    r"""(?P<val>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s,{}\[\]"']+)"""
)


class SecretRegistry:
    """The set of secret values and names known to this process; thread-safe, grows only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._names: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add_value(self, value: str | Secret | None) -> None:
        raw = value.reveal() if isinstance(value, Secret) else value
        if not raw or len(raw) < MIN_SECRET_VALUE_LENGTH:
            return
        forms = {raw, quote(raw, safe=""), quote_plus(raw), base64.b64encode(raw.encode()).decode()}
        with self._lock:
            self._values.update(f for f in forms if len(f) >= MIN_SECRET_VALUE_LENGTH)
            self._pattern = None

    def add_name(self, name: str) -> None:
        with self._lock:
            self._names.add(name.upper())

    def add_mapping(self, values: Mapping[str, object]) -> None:
        """Learn every value of a mapping whose key is secret-named or already a Secret."""
        for key, value in values.items():
            if isinstance(value, Secret) or is_secret_name(key):
                self.add_name(key)
                self.add_value(value if isinstance(value, (str, Secret)) else None)

    def is_secret_key(self, name: str) -> bool:
        return name.upper() in self._names or is_secret_name(name)

    def value_pattern(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                # Longest first so a secret containing another is masked whole.
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            return self._pattern


# The process-wide registry: Settings registers what it loads, tests may make their own.
REGISTRY = SecretRegistry()


def redact(text: str, registry: SecretRegistry | None = None) -> str:
    """Return ``text`` with every known secret value, secret-named value and secret shape masked.

    This is the one function every artifact, log line and error message passes through.
    """
    if not text:
        return text
    reg = registry or REGISTRY
    pattern = reg.value_pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)

    def _by_key(match: re.Match[str]) -> str:
        if not reg.is_secret_key(match.group("key")):
            return match.group(0)
        value = match.group("val")
        if MASK in value or value in ('""', "''", "null", "None", "[]", "{}", "true", "false", "True", "False"):
            return match.group(0)
        quote_char = value[0] if value[:1] in ('"', "'") else ""
        if not quote_char and match.group("q") == '"':
            quote_char = '"'  # a JSON number stays valid JSON once masked
        return f"{match.group('pre')}{quote_char}{MASK}{quote_char}"

    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return _KEY_VALUE.sub(_by_key, text)


def redact_mapping(values: Mapping[str, object], registry: SecretRegistry | None = None) -> dict[str, str]:
    """Mask whole values of secret keys and run the rest through redact(); for env snapshots."""
    reg = registry or REGISTRY
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, Secret) or reg.is_secret_key(key):
            out[key] = MASK if value else ""
        else:
            out[key] = redact("" if value is None else str(value), reg)
    return out


def redact_data(data: Any, registry: SecretRegistry | None = None) -> Any:
    """Redact a JSON-like structure value by value, so the result always stays valid JSON:
    secret-named keys are masked whole, every other string goes through redact()."""
    reg = registry or REGISTRY
    if isinstance(data, Secret):
        return MASK
    if isinstance(data, str):
        return redact(data, reg)
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            secret_key = isinstance(key, str) and reg.is_secret_key(key)
            if secret_key and value not in (None, "", True, False) and not isinstance(value, (dict, list)):
                out[redact(str(key), reg)] = MASK
            else:
                out[redact(str(key), reg)] = redact_data(value, reg)
        return out
    if isinstance(data, (list, tuple, set)):
        return [redact_data(v, reg) for v in data]
    return data
