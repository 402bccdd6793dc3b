"""deploy.ps1 has never run on these machines (no PowerShell here), so it is parsed with a real
PowerShell grammar (tree-sitter-powershell, installed by scripts/setup.d/ps1-grammar.sh) and the
switches it forwards are checked against the flags of the `inv` tasks it calls."""
from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import need

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRIPT = REPO / "deploy.ps1"
Node = dict[str, Any]


def parse(path: Path) -> Node:
    need(bool(shutil.which("node")) and (HERE / "node_modules" / "tree-sitter-powershell").is_dir(),
         "node and tests/ps1/node_modules (bash scripts/setup.d/ps1-grammar.sh)")
    done = subprocess.run(["node", "--no-deprecation", str(HERE / "parse.mjs"), str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def walk(node: Node, ancestors: tuple[Node, ...] = ()) -> Iterator[tuple[Node, tuple[Node, ...]]]:
    yield node, ancestors
    for child in node["children"]:
        yield from walk(child, (*ancestors, node))


def syntax_errors(tree: Node) -> list[str]:
    """Where the grammar gave up (ERROR) or had to invent a token (MISSING)."""
    return [f"line {n['line']}, column {n['column']}: " + (f"missing {n['type']!r}" if n["missing"]
                                                           else f"cannot parse {n['text'][:40]!r}")
            for n, _ in walk(tree) if n["type"] == "ERROR" or n["missing"]]


def condition(if_statement: Node) -> str:
    """The text between `if (` and `)`."""
    return next(c["text"] for c in if_statement["children"] if c["named"])


def strings(node: Node) -> list[str]:
    return [n["text"].strip("\"'") for n, _ in walk(node) if n["type"] == "string_literal"]


def assignments(tree: Node, variable: str) -> Iterator[tuple[Node, tuple[Node, ...]]]:
    for node, ancestors in walk(tree):
        if node["type"] == "assignment_expression" and node["children"][0]["text"] == variable:
            yield node, ancestors


def task_choice(tree: Node) -> tuple[str, str, str]:
    """From `$task = if ($Switch) { "a" } else { "b" }`: (switch, task when set, task otherwise)."""
    (node, _), = assignments(tree, "$task")
    branch = next(n for n, _ in walk(node) if n["type"] == "if_statement")
    when = next(c for c in branch["children"] if c["type"] == "statement_block")
    otherwise = next(c for c in branch["children"] if c["type"] == "else_clause")
    return condition(branch), strings(when)[0], strings(otherwise)[0]


def refused_with(tree: Node, switch: str) -> set[str]:
    """Switches the script refuses to combine with `switch` (`if ($A -and $B) { ... exit }`)."""
    refused = set()
    for node, _ in walk(tree):
        if node["type"] == "if_statement":
            parts = [p.strip() for p in condition(node).split("-and")]
            if len(parts) == 2 and switch in parts and re.search(r"\bexit\b", node["text"]):
                refused |= set(parts) - {switch}
    return refused


def forwarded(tree: Node) -> dict[str, set[str]]:
    """Every `--flag` the script adds to $invokeArgs, with the tasks it can reach."""
    switch, when, otherwise = task_choice(tree)
    only_otherwise = {f"-not {switch}", *refused_with(tree, switch)}
    flags: dict[str, set[str]] = {}
    for node, ancestors in assignments(tree, "$invokeArgs"):
        guard = next((condition(a) for a in reversed(ancestors) if a["type"] == "if_statement"), "")
        tasks = {otherwise} if any(g in guard for g in only_otherwise) else {when, otherwise}
        for flag in (s for s in strings(node) if s.startswith("--")):
            flags.setdefault(flag, set()).update(tasks)
    return flags


@functools.lru_cache(maxsize=None)  # one `inv --help` per task: each start costs a second or two
def inv_flags(task: str) -> frozenset[str]:
    """The task's flags as Invoke itself prints them (`inv --help TASK`)."""
    done = subprocess.run([sys.executable, "-m", "invoke", "--help", task], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"deploy.ps1 calls `inv {task}`, which does not exist: {done.stderr}"
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", done.stdout.split("Options:", 1)[-1]))


def forwarding_problems(tree: Node) -> list[str]:
    return [f"deploy.ps1 passes {flag} to `inv {task}`, which has no such flag"
            for flag, tasks in sorted(forwarded(tree).items()) for task in sorted(tasks) if flag not in inv_flags(task)]


@pytest.fixture(scope="module")
def tree() -> Node:
    return parse(SCRIPT)


def test_deploy_ps1_parses_without_syntax_errors(tree):
    assert syntax_errors(tree) == []


@pytest.mark.parametrize("good, broken", [
    ('{ $invokeArgs += "--no-timestamp" }', '{ $invokeArgs += "--no-timestamp"'),   # block never closed
    ('@("--env-file", $EnvFile)', '@("--env-file", $EnvFile'),                        # parenthesis never closed
    ("param(", "param["),                                                             # wrong bracket
])
def test_a_deliberately_broken_copy_is_caught(tmp_path, good, broken):
    source = SCRIPT.read_text()
    assert source.count(good) == 1
    copy = tmp_path / "deploy.ps1"
    copy.write_text(source.replace(good, broken))
    assert syntax_errors(parse(copy)), f"the grammar accepted a copy with {broken!r}"


def test_every_forwarded_switch_is_a_flag_of_the_task_it_reaches(tree):
    flags = forwarded(tree)
    # What the README promises; also proves the extraction found the forwarding at all.
    assert flags == {"--update-only": {"deploy"}, "--plan": {"deploy"}, "--skip-allowlist": {"deploy"},
                     "--no-timestamp": {"deploy", "verify"}, "--env-file": {"deploy", "verify"}}
    assert forwarding_problems(tree) == []


def test_a_flag_the_task_lacks_is_reported(tmp_path):
    copy = tmp_path / "deploy.ps1"
    copy.write_text(SCRIPT.read_text().replace('"--skip-allowlist" }', '"--skip-allowlist" }\n'
                                               'if ($NoTimestamp) { $invokeArgs += "--no-timestamps" }'))
    problems = forwarding_problems(parse(copy))
    assert problems == ["deploy.ps1 passes --no-timestamps to `inv deploy`, which has no such flag",
                        "deploy.ps1 passes --no-timestamps to `inv verify`, which has no such flag"]


def test_readme_documents_every_parameter(tree):
    readme = (REPO / "README.md").read_text()
    block = next(n for n, _ in walk(tree) if n["type"] == "param_block")
    params = [n["text"].lstrip("$") for n, _ in walk(block) if n["type"] == "variable"]
    assert params and all(f"`-{p}" in readme for p in params), params
