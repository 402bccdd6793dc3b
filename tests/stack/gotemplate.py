"""A small Go text/template renderer for the subset Traefik's file provider sees in stack/.

Why: the JSON schemas describe *rendered* YAML, so the schema and policy tests must render
dynamic.yml the way Traefik does before parsing it. Anything outside the supported subset
raises TemplateError, so a new construct in dynamic.yml fails loudly instead of silently
validating the wrong text. The real Traefik test proves Traefik renders the same file.

Supported: {{ expr }}, {{- / -}} trimming, if/else/end, range $v := expr, and the Sprig
functions env, splitList, trim, atoi, mul, eq, ne, and, or, not.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_ACTION = re.compile(r"{{(-\s)?(.*?)(\s-)?}}", re.S)
_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|(\$\w+)|(-?\d+)|([A-Za-z_]\w*))')


class TemplateError(ValueError):
    pass


def _functions(env: Mapping[str, str]) -> dict[str, Callable[..., Any]]:
    def atoi(s: str) -> int:
        try:
            return int(s.strip())
        except ValueError:
            return 0  # Sprig's atoi yields 0 for non-numbers, as Traefik would.

    return {
        "env": lambda name: env.get(name, ""),
        "splitList": lambda sep, s: s.split(sep),
        "trim": lambda s: s.strip(),
        "atoi": atoi,
        "mul": lambda *xs: _product(xs),
        "eq": lambda a, *bs: any(a == b for b in bs),
        "ne": lambda a, b: a != b,
        "and": lambda *xs: all(xs),
        "or": lambda *xs: any(xs),
        "not": lambda x: not x,
    }


def _product(xs: tuple[int, ...]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def _tokenize(expr: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"unsupported template syntax near {expr[pos:]!r}")
        lp, rp, string, var, num, ident = m.groups()
        if lp:
            tokens.append(("(", None))
        elif rp:
            tokens.append((")", None))
        elif string is not None:
            tokens.append(("lit", bytes(string, "utf-8").decode("unicode_escape")))
        elif var:
            tokens.append(("var", var))
        elif num:
            tokens.append(("lit", int(num)))
        else:
            tokens.append(("ident", ident))
        pos = m.end()
    return tokens


class _Evaluator:
    def __init__(self, funcs: dict[str, Callable[..., Any]], scope: dict[str, Any]):
        self.funcs, self.scope = funcs, scope

    def evaluate(self, expr: str) -> Any:
        tokens = _tokenize(expr)
        value, rest = self._call(tokens)
        if rest:
            raise TemplateError(f"trailing tokens in {expr!r}")
        return value

    def _call(self, tokens: list[tuple[str, Any]]) -> tuple[Any, list[tuple[str, Any]]]:
        if tokens and tokens[0][0] == "ident":
            name = tokens[0][1]
            if name not in self.funcs:
                raise TemplateError(f"unsupported template function {name!r}")
            args, rest = [], tokens[1:]
            while rest and rest[0][0] != ")":
                arg, rest = self._operand(rest)
                args.append(arg)
            return self.funcs[name](*args), rest
        return self._operand(tokens)

    def _operand(self, tokens: list[tuple[str, Any]]) -> tuple[Any, list[tuple[str, Any]]]:
        kind, val = tokens[0]
        if kind == "(":
            value, rest = self._call(tokens[1:])
            if not rest or rest[0][0] != ")":
                raise TemplateError("unbalanced parentheses in template")
            return value, rest[1:]
        if kind == "lit":
            return val, tokens[1:]
        if kind == "var":
            if val not in self.scope:
                raise TemplateError(f"undefined template variable {val}")
            return self.scope[val], tokens[1:]
        if kind == "ident":  # a niladic function used as an argument
            if val not in self.funcs:
                raise TemplateError(f"unsupported template function {val!r}")
            return self.funcs[val](), tokens[1:]
        raise TemplateError(f"unexpected {kind!r} in template")


def _parse(text: str) -> list[Any]:
    """Split into a tree of text chunks and (kind, expr, children...) nodes."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(text):
        chunk = text[pos:m.start()]
        if m.group(1):
            chunk = chunk.rstrip()
        pieces.append(("text", chunk))
        pieces.append(("action", m.group(2).strip()))
        pos = m.end()
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
    pieces.append(("text", text[pos:]))
    if any("{{" in p for k, p in pieces if k == "text"):
        raise TemplateError("unterminated {{ in template")

    root: list[Any] = []
    stack: list[list[Any]] = [root]
    nodes: list[dict[str, Any]] = []
    for kind, body in pieces:
        if kind == "text":
            stack[-1].append(body)
        elif body.startswith("if "):
            node = {"kind": "if", "expr": body[3:], "then": [], "else": []}
            stack[-1].append(node)
            nodes.append(node)
            stack.append(node["then"])
        elif body.startswith("range "):
            m = re.fullmatch(r"range\s+(\$\w+)\s*:=\s*(.+)", body, re.S)
            if not m:
                raise TemplateError(f"unsupported range form {body!r}")
            node = {"kind": "range", "var": m.group(1), "expr": m.group(2), "body": []}
            stack[-1].append(node)
            nodes.append(node)
            stack.append(node["body"])
        elif body == "else":
            if not nodes or nodes[-1]["kind"] != "if":
                raise TemplateError("else without if")
            stack[-1] = nodes[-1]["else"]
        elif body == "end":
            if not nodes:
                raise TemplateError("end without if/range")
            nodes.pop()
            stack.pop()
        else:
            stack[-1].append({"kind": "expr", "expr": body})
    if nodes:
        raise TemplateError("missing {{ end }}")
    return root


def _render(tree: list[Any], funcs: dict[str, Callable[..., Any]], scope: dict[str, Any]) -> str:
    out: list[str] = []
    ev = _Evaluator(funcs, scope)
    for node in tree:
        if isinstance(node, str):
            out.append(node)
        elif node["kind"] == "expr":
            out.append(str(ev.evaluate(node["expr"])))
        elif node["kind"] == "if":
            branch = node["then"] if ev.evaluate(node["expr"]) else node["else"]
            out.append(_render(branch, funcs, scope))
        else:
            for item in ev.evaluate(node["expr"]):
                out.append(_render(node["body"], funcs, {**scope, node["var"]: item}))
    return "".join(out)


def render(text: str, env: Mapping[str, str]) -> str:
    """Render `text` like Traefik's file provider would with environment `env`."""
    return _render(_parse(text), _functions(env), {})
