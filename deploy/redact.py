"""The single redaction function, and the Secret type it learns from.

Redaction works three ways, strongest first (pyinfra's habit: know which values are secret
rather than guess afterwards):

1. by value: every secret value loaded anywhere in the run is replaced wherever it appears,
   also in the spellings logs and documents give it (URL-encoded, base64, JSON- and
   Go-escaped, Compose's ``$$``) and when a line break splits it;
2. by key: ``KEY=value``, ``KEY: value`` and ``"KEY": "value"`` where KEY is secret-named;
3. by shape: DigitalOcean tokens, ``user:password@`` in URLs, PEM private keys, htpasswd
   hashes and Authorization headers, for secrets we were never told about.

Help texts the program wrote (an error's fix hint) are registered too: key-based masking leaves
their wording alone ("write it as KEY=value" stays readable); value and shape masking still apply.
"""
from __future__ import annotations

import base64
import bisect
import functools
import json
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
# A value of one kind of character (all lower-case, all digits) shorter than this is a word or a
# number that ordinary text holds too ("postgres" in an image name, a port).
DISTINCTIVE_ONE_CLASS_LENGTH = 16


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


@functools.lru_cache(maxsize=4096)
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
    # scheme://user:password@host and scheme://:password@host -> keep the user, mask the password.
    (re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)"), r"\g<pre>" + MASK),
    # htpasswd hashes: apr1/md5, bcrypt, sha1, sha-crypt.
    (re.compile(r"\$(?:apr1|1|2[abxy]?|5|6)\$[./A-Za-z0-9$]{8,}"), MASK),
    (re.compile(r"\{SHA\}[A-Za-z0-9+/=]{20,}"), MASK),
    (re.compile(r"(?i)(?P<pre>\bauthorization\s*[:=]\s*(?:basic|bearer|token)\s+)[^\s\"',]+"), r"\g<pre>" + MASK),
    (re.compile(r"(?i)(?P<pre>\bbearer\s+)[A-Za-z0-9._~+/=-]{12,}"), r"\g<pre>" + MASK),
]

# A key and its separator: KEY=, KEY:, "KEY": (also --flag= and X-Header:). What the value is,
# and how far it runs, depends on where the key stands (see _value_span).
_KEY = re.compile(r"""(?<![\w.-])(?P<q>["']?)(?P<key>-{0,2}[A-Za-z_][\w.-]*)(?P=q)[ \t]*(?P<sep>[=:])[ \t]*""")
# Values that say "nothing here": masking them would only hide that fact.
_EMPTY_VALUES = frozenset({"", '""', "''", "null", "None", "[]", "{}", "true", "false", "True", "False"})
# Quotes, escapes and line ends: enough to tell whether a position is inside a "string".
_QUOTE_TOKENS = re.compile(r'\\.|"|\n')
# A URL query value ends at the next parameter, fragment, space or quote.
_QUERY_VALUE_END = re.compile(r"""[&#\s"'<>]""")
# A plain token: the value a harmless key holds, checked against the short registered values.
_TOKEN = re.compile(r"""[^\s,;&"'{}\[\]]+""")
# Between two characters of a registered value: a line break (wrapped output, a shell's "\").
_LINE_BREAK = re.compile(r"\\?\r?\n[ \t]*")
# Go's strconv.Quote (%q) escapes; printable characters stay as they are.
_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t",
               "\v": r"\v", '"': r"\"", "\\": r"\\"}


def char_classes(value: str) -> int:
    """How many kinds of character a value uses: lower case, upper case, digits, others."""
    return sum((any(c.islower() for c in value), any(c.isupper() for c in value),
                any(c.isdigit() for c in value), any(not c.isalnum() for c in value)))


def is_distinctive(value: str) -> bool:
    """True when a value can be masked wherever it appears without blanking ordinary text:
    at least MIN_SECRET_VALUE_LENGTH characters, and not a lone word or number ("postgres",
    "123456": one kind of character and shorter than DISTINCTIVE_ONE_CLASS_LENGTH)."""
    if len(value) < MIN_SECRET_VALUE_LENGTH:
        return False
    return char_classes(value) > 1 or len(value) >= DISTINCTIVE_ONE_CLASS_LENGTH


def _go_quoted(value: str) -> str:
    out = []
    for ch in value:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def value_forms(raw: str) -> set[str]:
    """The spellings a secret takes in logs and documents: as is, URL-encoded, base64, escaped
    inside a JSON or Go string (Go's encoding/json also escapes <, > and &), Compose's $$."""
    json_utf8 = json.dumps(raw, ensure_ascii=False)[1:-1]
    go_json = json_utf8.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return {
        raw, quote(raw, safe=""), quote(raw), quote_plus(raw),
        base64.b64encode(raw.encode()).decode(), base64.urlsafe_b64encode(raw.encode()).decode(),
        json.dumps(raw)[1:-1], json_utf8, go_json, _go_quoted(raw), raw.replace("$", "$$"),
    }


class SecretRegistry:
    """The secret values and names known to this process, and the help texts it wrote;
    thread-safe, grows only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._context_values: set[str] = set()
        self._names: set[str] = set()
        self._help: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add_value(self, value: str | Secret | None) -> None:
        """Learn a secret value. A distinctive one is masked wherever it appears; a short or
        common one ("postgres") only where it stands as a value (KEY=value, "key": "value"),
        so image names and ports stay readable (Settings refuses such secrets anyway)."""
        raw = value.reveal() if isinstance(value, Secret) else value
        if not raw:
            return
        with self._lock:
            if is_distinctive(raw):
                self._values.update(f for f in value_forms(raw) if len(f) >= MIN_SECRET_VALUE_LENGTH)
                self._pattern = None
            else:
                self._context_values.update(value_forms(raw))

    def add_name(self, name: str) -> None:
        with self._lock:
            self._names.add(name.upper())

    def add_help(self, text: str) -> None:
        """Learn a help text this program wrote (an error's fix hint): it names keys as words,
        so key-based masking must leave its wording alone."""
        if text and text.strip():
            with self._lock:
                self._help.add(text)

    def add_mapping(self, values: Mapping[str, object]) -> None:
        """Learn every value of a mapping whose key is secret-named or already a Secret."""
        for key, value in values.items():
            if isinstance(value, Secret) or is_secret_name(key):
                self.add_name(key)
                self.add_value(value if isinstance(value, (str, Secret)) else None)

    def is_secret_key(self, name: str) -> bool:
        return name.upper() in self._names or is_secret_name(name)

    def is_context_value(self, value: str) -> bool:
        return value in self._context_values

    def has_context_values(self) -> bool:
        return bool(self._context_values)

    def help_spans(self, text: str) -> list[tuple[int, int]]:
        """Where registered help texts stand in ``text``, in order."""
        with self._lock:
            helps = sorted(self._help, key=len, reverse=True)
        spans: list[tuple[int, int]] = []
        for help_text in helps:
            start = text.find(help_text)
            while start != -1:
                end = start + len(help_text)
                if not any(s < end and start < e for s, e in spans):
                    spans.append((start, end))
                start = text.find(help_text, end)
        return sorted(spans)

    def value_pattern(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                self._pattern = _values_pattern(frozenset(self._values))
            return self._pattern


@functools.lru_cache(maxsize=4)
def _values_pattern(values: frozenset[str]) -> re.Pattern[str]:
    # Longest first so a secret containing another is masked whole. Plain literals: a pattern
    # allowing a line break between any two characters took ~0.8 s to compile per registry.
    return re.compile("|".join(map(re.escape, sorted(values, key=len, reverse=True))))


def _mask_values(pattern: re.Pattern[str], text: str) -> str:
    """Mask every registered value in ``text``, also one split by line breaks (wrapped output,
    a shell's "\" continuation): the values are searched in the text with its breaks taken out,
    and each match is mapped back. A split secret is replaced whole; its line breaks stay, so
    line counts hold."""
    breaks = list(_LINE_BREAK.finditer(text)) if "\n" in text else []
    if not breaks:
        return pattern.sub(MASK, text)
    # The text as pieces between breaks: where each starts in the joined view and in the text.
    joined_starts, text_starts, pieces, pos, at = [], [], [], 0, 0
    for brk in breaks:
        joined_starts.append(at)
        text_starts.append(pos)
        pieces.append(text[pos:brk.start()])
        at += brk.start() - pos
        pos = brk.end()
    joined_starts.append(at)
    text_starts.append(pos)
    pieces.append(text[pos:])

    def to_text(i: int) -> int:
        k = bisect.bisect_right(joined_starts, i) - 1
        return text_starts[k] + (i - joined_starts[k])

    out, last = [], 0
    for m in pattern.finditer("".join(pieces)):
        start, end = to_text(m.start()), to_text(m.end() - 1) + 1
        out.append(text[last:start])
        out.append(MASK + "\n" * text.count("\n", start, end))
        last = end
    out.append(text[last:])
    return "".join(out)


# The process-wide registry: Settings registers what it loads, tests may make their own.
REGISTRY = SecretRegistry()


class _Strings:
    """Answers "is this position inside a double-quoted string on its line?" for increasing
    positions, in one pass over the text (a minified JSON line may be megabytes long)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._inside = False

    def inside(self, pos: int) -> bool:
        for token in _QUOTE_TOKENS.finditer(self._text, self._pos, pos):
            if token.group(0) == '"':
                self._inside = not self._inside
            elif token.group(0) == "\n":
                self._inside = False
        self._pos = max(self._pos, pos)
        return self._inside


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    end = len(text) if end == -1 else end
    return end - 1 if end > pos and text[end - 1] == "\r" else end


def _string_end(text: str, start: int, stop: int, quote_char: str = '"') -> int:
    """Index of the next ``quote_char`` from ``start`` (a backslash escapes inside double
    quotes), or ``stop`` when the line ends first."""
    i = start
    while i < stop:
        if text[i] == "\\" and quote_char == '"':
            i += 2
        elif text[i] == quote_char:
            return i
        else:
            i += 1
    return stop


def _value_span(text: str, match: re.Match[str], stop: int, in_string: bool) -> tuple[int, int, str]:
    """Where the value after a key starts and ends, and what replaces it when it is masked.

    A quoted value is masked inside its quotes. Otherwise the key's place decides: after a
    quoted key ("KEY": 5) a JSON scalar; in a URL query (?token=) up to the next parameter;
    inside a "string" up to its closing quote; else (an env-file or YAML line, a flag) to
    the end of the line, since such a value may hold spaces, commas and braces.
    """
    start = match.end()
    if start < stop and text[start] in "\"'":
        return start + 1, _string_end(text, start + 1, stop, text[start]), MASK
    if match.group("q"):
        end = start
        while end < stop and text[end] not in " \t,}]":
            end += 1
        # A bare scalar after "KEY": becomes a string, so the document stays valid JSON.
        return start, end, f"{match.group('q')}{MASK}{match.group('q')}"
    if text[match.start() - 1:match.start()] in ("?", "&") and match.start() > 0:
        found = _QUERY_VALUE_END.search(text, start, stop)
        return start, found.start() if found else stop, MASK
    if in_string:
        return start, _string_end(text, start, stop), MASK
    return start, stop, MASK


def _mask_by_key(text: str, reg: SecretRegistry) -> str:
    helps = reg.help_spans(text)
    strings = _Strings(text)
    out: list[str] = []
    copied = 0  # text[:copied] is already in out
    pos = 0
    line_stop = -1  # end of the line the current key stands on (found once per line)
    while True:
        match = _KEY.search(text, pos)
        if match is None:
            break
        inside_help = next(((s, e) for s, e in helps if s <= match.start() < e), None)
        if inside_help:
            pos = inside_help[1]
            continue
        secret_key = reg.is_secret_key(match.group("key"))
        if not secret_key and not reg.has_context_values():
            pos = match.end()  # its value may hold a secret key of its own (url: ...?token=)
            continue
        if match.end() > line_stop:
            line_stop = _line_end(text, match.end())
        start, end, replacement = _value_span(text, match, line_stop, strings.inside(match.start()))
        # A value stops where a help text follows it on the same line, unless nothing would be
        # left of the value (then the "help text" is the value, and it is masked with it).
        end = min([end] + [s for s, _ in helps if start < s < end and text[start:s].strip()])
        if secret_key:
            value = text[start:end].rstrip()
            secret = value not in _EMPTY_VALUES and value != MASK and value[:1] not in ("{", "[")
        else:
            # A harmless key's value is masked only when it is a short registered secret.
            token = _TOKEN.match(text, start, end)
            value = token.group(0) if token else ""
            secret = bool(value) and reg.is_context_value(value)
        if not secret:
            pos = match.end()
            continue
        out.append(text[copied:start])
        out.append(replacement)
        copied = pos = start + len(value)
    out.append(text[copied:])
    return "".join(out)


def redact(text: str, registry: SecretRegistry | None = None) -> str:
    """Return ``text`` with every known secret value, secret-named value and secret shape masked.

    This is the one function every artifact, log line and error message passes through.
    """
    if not text:
        return text
    reg = registry or REGISTRY
    pattern = reg.value_pattern()
    if pattern is not None:
        text = _mask_values(pattern, text)
    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return _mask_by_key(text, reg)


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
