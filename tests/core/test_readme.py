"""The README's first steps work as written (issue 8)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_says_how_to_activate_after_the_setup_commands() -> None:
    blocks = _blocks(README)
    setup = next(i for i, b in enumerate(blocks) if "scripts/test.sh" in b)
    activate = next((i for i, b in enumerate(blocks) if ". .venv/bin/activate" in b), None)
    assert activate == setup + 1, "activation comes right after the set-up commands"
    assert README.index(". .venv/bin/activate") < README.index("lmforge run examples/debug")


def test_readme_fast_subset_uses_a_declared_marker() -> None:
    assert 'bash scripts/test.sh -m "not slow"' in README
    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]["markers"]
    assert any(m.startswith("slow:") for m in markers)
    assert '"$@"' in (REPO / "scripts" / "test.sh").read_text(), "options reach pytest"
