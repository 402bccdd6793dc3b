"""The configuration reference stays true: the table in the docs is the one the declarations in
deploy/settings.py generate (docs/configuration.md when it exists, else README.md)."""
from pathlib import Path

from deploy.settings import KEYS, reference_markdown

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "regenerate it with `python -m deploy.settings` and paste it over the table"


def reference_doc() -> Path:
    moved = REPO / "docs" / "configuration.md"
    return moved if moved.is_file() else REPO / "README.md"


def _table_in(text: str) -> list[str]:
    """The committed table: from its header row to the first line that is not a table row."""
    lines = text.splitlines()
    header = reference_markdown().splitlines()[0]
    assert header in lines, f"no configuration table (header {header!r}); {REGENERATE}"
    start = lines.index(header)
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_every_setting_is_in_the_docs():
    text = reference_doc().read_text()
    missing = [k.env for k in KEYS if f"`{k.env}`" not in text]
    assert not missing, f"add these to {reference_doc().name}'s configuration reference: {missing}; {REGENERATE}"


def test_the_table_is_the_generated_one():
    doc = reference_doc()
    committed, generated = _table_in(doc.read_text()), reference_markdown().splitlines()
    drift = [f"- {line}" for line in committed if line not in generated] + \
            [f"+ {line}" for line in generated if line not in committed]
    assert committed == generated, f"{doc.relative_to(REPO)}'s settings table drifted; {REGENERATE}:\n" + "\n".join(drift)


def test_a_changed_declaration_is_drift(monkeypatch):
    import deploy.settings as settings

    changed = [k if k.env != "NODES" else settings.Key(**{**k.__dict__, "default": 3}) for k in KEYS]
    monkeypatch.setattr(settings, "KEYS", tuple(changed))
    assert _table_in(reference_doc().read_text()) != reference_markdown().splitlines()
