"""The plugin catalog (``registry/catalog.toml``): known plugins, installed or not.

``lmforge plugins list`` shows catalog entries that are not installed with the pip requirement
that installs them, and validation names the distribution to install when a spec selects a
component only the catalog knows.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class CatalogComponent:
    kind: str
    name: str


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    distribution: str
    requirement: str
    entry_points: tuple[str, ...]
    components: tuple[CatalogComponent, ...]
    core: str  # compatible lmforge versions, a PEP 440 specifier
    description: str = ""
    first_party: bool = False


def parse_catalog(text: str) -> list[CatalogEntry]:
    doc = tomllib.loads(text)
    entries = []
    for p in doc.get("plugin", []):
        comps = []
        for ref in p.get("components", []):
            kind, _, name = ref.rpartition("/")
            comps.append(CatalogComponent(kind=kind, name=name))
        entries.append(CatalogEntry(
            name=p["name"], distribution=p["distribution"], requirement=p.get("requirement", p["distribution"]),
            entry_points=tuple(p.get("entry_points", [])), components=tuple(comps),
            core=p.get("core", ""), description=p.get("description", ""),
            first_party=bool(p.get("first_party", False))))
    return entries


@functools.cache
def load_catalog() -> tuple[CatalogEntry, ...]:
    """The catalog shipped with this lmforge (empty if the file is missing)."""
    try:
        text = resources.files("lmforge").joinpath("_catalog/catalog.toml").read_text("utf-8")
    except (FileNotFoundError, OSError):
        return ()
    return tuple(parse_catalog(text))
