"""Docs that must stay true: every hook documented, spec reference generated, catalog in sync."""

from __future__ import annotations

from pathlib import Path

from lmforge.catalog import load_catalog
from lmforge.plugins import PluginManager, iter_hook_names
from lmforge.reference import markdown_reference

REPO = Path(__file__).resolve().parents[2]


def test_every_hook_is_documented():
    text = (REPO / "docs" / "architecture.md").read_text()
    missing = [h for h in iter_hook_names() if f"`{h}`" not in text]
    assert missing == []
    assert len(list(iter_hook_names())) == 9


def test_spec_reference_is_generated_from_first_party_plugins():
    # Only lmforge's own plugins: a plugin the developer installed must not make this fail.
    pm = PluginManager.load_first_party()
    expected = markdown_reference(pm)
    committed = (REPO / "docs" / "spec-reference.md").read_text()
    assert committed == expected, ("docs/spec-reference.md is stale: run `lmforge schema "
                                   "--first-party --format markdown -o docs/spec-reference.md`")


def test_catalog_agrees_with_installed_entry_points():
    pm = PluginManager.load_first_party()
    first_party = [e for e in load_catalog() if e.first_party]
    assert first_party, "the catalog lists the first-party plugins"
    for entry in first_party:
        for ep in entry.entry_points:
            assert ep in pm.plugins, f"catalog names entry point {ep!r}, which is not installed"
        installed = {(c.kind, c.name) for ep in entry.entry_points
                     for c in pm.plugins[ep].components}
        listed = {(c.kind, c.name) for c in entry.components}
        assert listed == installed, f"{entry.distribution}: catalog {sorted(listed - installed)}" \
                                    f" vs installed {sorted(installed - listed)}"
    covered = {ep for e in first_party for ep in e.entry_points}
    ours = {name for name, info in pm.plugins.items() if info.distribution == "lmforge"}
    assert ours == covered, f"not in the catalog: {sorted(ours - covered)}"
