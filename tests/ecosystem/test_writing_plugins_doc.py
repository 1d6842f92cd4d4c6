"""docs/writing-plugins.md works as written: its snippets, dropped into the package that
`lmforge new-plugin` writes, pass their own tests and `check_plugin`; its entry point and layout
are the scaffold's; `-p` works where it says (issue 8)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from lmforge.scaffold import create_plugin, plugin_names

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "writing-plugins.md").read_text()
DOC_PACKAGE = "lmforge_my_filters"


def snippets(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def files_in_doc() -> dict[str, str]:
    """Python snippets that start with a '# <path>' comment: path -> code."""
    out = {}
    for code in snippets("python"):
        first = code.splitlines()[0]
        m = re.match(r"# (\S+\.py)\b", first)
        if m:
            out[m.group(1)] = code
    return out


def test_doc_names_the_scaffold_entry_point_and_layout(tmp_path: Path) -> None:
    root = create_plugin("my-filters", tmp_path / "pkg")
    generated = tomllib.loads((root / "pyproject.toml").read_text())
    (toml,) = snippets("toml")
    assert tomllib.loads(toml)["project"]["entry-points"] == \
        generated["project"]["entry-points"]
    for path in ("src/lmforge_my_filters/plugin.py", "src/lmforge_my_filters/filters.py",
                 "tests/test_plugin.py"):
        assert (root / path).is_file() and path in DOC, path
    assert f'plugin "{plugin_names("my-filters").name}"' in DOC


@pytest.fixture(scope="module")
def doc_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The scaffold grown with the doc's files, under a package name no one has installed."""
    name = f"docs-probe-{uuid.uuid4().hex[:8]}"
    package = plugin_names(name).package
    root = create_plugin(name, tmp_path_factory.mktemp("doc") / f"lmforge-{name}")
    files = files_in_doc()
    assert set(files) == {"src/lmforge_my_filters/plugin.py", "src/lmforge_my_filters/filters.py",
                          "src/lmforge_my_filters/stages.py", "tests/test_plugin.py"}, set(files)
    for rel, code in files.items():
        target = root / rel.replace(DOC_PACKAGE, package)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code.replace(DOC_PACKAGE, package))
    return root, package


def _env(*paths: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    return env


def test_doc_snippets_pass_their_tests(doc_package: tuple[Path, str]) -> None:
    root, _ = doc_package
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_plugin.py"], cwd=root, env=_env(root / "src"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout, proc.stdout


def test_p_option_works_where_the_doc_says(doc_package: tuple[Path, str]) -> None:
    root, package = doc_package

    def info(cwd: Path, *pythonpath: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lmforge", "-p", f"{package}.plugin",
                               "plugins", "info", "filter/no-shouting"], cwd=cwd,
                              env=_env(*pythonpath), capture_output=True, text=True,
                              timeout=120)

    assert info(root, root / "src").returncode == 0  # PYTHONPATH=src from the package root
    assert info(root / "src").returncode == 0  # or from src/
    plain = info(root)  # the package root alone does not hold the package
    assert plain.returncode == 2 and "cannot import plugin module" in plain.stderr
