"""The docs stay true: the settings table in docs/configuration.md is the one the declarations in
deploy/settings.py generate, and every relative link in README.md, docs/*.md and stack/README.md
points to a file (and heading) that exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.settings import KEYS
from deploy.settings_docs import reference_markdown

REPO = Path(__file__).resolve().parents[2]
CONFIGURATION = REPO / "docs" / "configuration.md"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "stack" / "README.md"]

# [text](target) and ![alt](target); a target ends at whitespace or ')'. Code spans and indented
# code blocks are left out first, so shell examples such as `a](b)` are not taken for links.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
INDENTED = re.compile(r"^(?: {4}|\t).*$", re.M)


def missing_settings(text: str) -> list[str]:
    return [k.env for k in KEYS if f"`{k.env}`" not in text]


def test_every_setting_is_in_the_configuration_reference():
    missing = missing_settings(CONFIGURATION.read_text())
    assert not missing, f"add these to docs/configuration.md (python -m deploy.settings_docs): {missing}"


def test_a_setting_missing_from_the_configuration_reference_is_caught():
    text = CONFIGURATION.read_text()
    name = KEYS[0].env
    assert missing_settings(text.replace(f"`{name}`", "")) == [name]


def anchors(md: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation other than '-' and '_' dropped, spaces -> '-'."""
    out = set()
    for line in FENCE.sub("", md).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return out


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def broken_links(md_file: Path) -> list[str]:
    text = INDENTED.sub("", CODE_SPAN.sub("", FENCE.sub("", md_file.read_text())))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):   # http:, https:, mailto: ...
            continue
        path, _, fragment = target.partition("#")
        dest = (md_file.parent / path).resolve() if path else md_file
        if not dest.exists():
            broken.append(f"{target} (no file {shown(dest)})")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text()):
            broken.append(f"{target} (no heading #{fragment} in {shown(dest)})")
    return broken


@pytest.mark.parametrize("md_file", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_an_existing_file(md_file):
    assert broken_links(md_file) == []


def test_the_docs_have_links_to_check():
    readme = REPO / "README.md"
    targets = LINK.findall(readme.read_text())
    assert "docs/configuration.md" in targets and "docs/report.png" in targets


def test_a_broken_link_is_caught(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n")
    (tmp_path / "pic.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [ok](there.md#a-heading) ![ok](pic.png) [web](https://example.com/x)\n"
                    "`[code](nowhere.md)`\n\n    [indented](nowhere.md)\n\n"
                    "[gone](missing.md) ![gone](img/missing.png) [gone](there.md#no-such-heading)\n")
    assert [b.split(" ")[0] for b in broken_links(page)] == ["missing.md", "img/missing.png",
                                                            "there.md#no-such-heading"]


REGENERATE = "regenerate it with `python -m deploy.settings_docs` and paste it over the table"


def _table_in(text: str) -> list[str]:
    """The committed table: from its header row to the first line that is not a table row."""
    lines = text.splitlines()
    header = reference_markdown().splitlines()[0]
    assert header in lines, f"no configuration table (header {header!r}); {REGENERATE}"
    start = lines.index(header)
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_the_table_is_the_generated_one():
    doc = CONFIGURATION
    committed, generated = _table_in(doc.read_text()), reference_markdown().splitlines()
    drift = [f"- {line}" for line in committed if line not in generated] + \
            [f"+ {line}" for line in generated if line not in committed]
    assert committed == generated, f"{doc.relative_to(REPO)}'s settings table drifted; {REGENERATE}:\n" + "\n".join(drift)


def test_a_changed_declaration_is_drift(monkeypatch):
    import deploy.settings as settings

    changed = [k if k.env != "NODES" else settings.Key(**{**k.__dict__, "default": 3}) for k in KEYS]
    monkeypatch.setattr(settings, "KEYS", tuple(changed))
    assert _table_in(CONFIGURATION.read_text()) != reference_markdown().splitlines()
