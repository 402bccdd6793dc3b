"""The README's configuration reference stays true: every setting is documented."""
from pathlib import Path

from deploy.settings import KEYS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme():
    missing = [k.env for k in KEYS if f"`{k.env}`" not in README]
    assert not missing, f"add these to README's configuration reference (python -m deploy.settings): {missing}"
