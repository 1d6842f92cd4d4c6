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
from pathlib import Path


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


def _resolve_requirement(requirement: str, base: Path | None) -> str:
    """A requirement that is a relative path (``./x``, ``../x``) is relative to the catalog
    file's folder: made absolute when that folder is known and the path exists there, so the
    printed ``pip install`` works from any directory."""
    if base is None or not requirement.startswith(("./", "../")):
        return requirement
    path = (base / requirement).resolve()
    return str(path) if path.exists() else requirement


def parse_catalog(text: str, base: Path | None = None) -> list[CatalogEntry]:
    """Parse catalog TOML; relative-path requirements resolve against ``base`` (the folder
    of the catalog file; see :func:`_resolve_requirement`)."""
    doc = tomllib.loads(text)
    entries = []
    for p in doc.get("plugin", []):
        comps = []
        for ref in p.get("components", []):
            kind, _, name = ref.rpartition("/")
            comps.append(CatalogComponent(kind=kind, name=name))
        entries.append(CatalogEntry(
            name=p["name"], distribution=p["distribution"],
            requirement=_resolve_requirement(p.get("requirement", p["distribution"]), base),
            entry_points=tuple(p.get("entry_points", [])), components=tuple(comps),
            core=p.get("core", ""), description=p.get("description", ""),
            first_party=bool(p.get("first_party", False))))
    return entries


@functools.cache
def load_catalog() -> tuple[CatalogEntry, ...]:
    """The catalog shipped with this lmforge (empty if the file is missing)."""
    node = resources.files("lmforge").joinpath("_catalog/catalog.toml")
    try:
        text = node.read_text("utf-8")
    except (FileNotFoundError, OSError):
        return ()
    # In a checkout (editable install) _catalog links to registry/: resolving the link makes
    # ../examples/... point into the checkout.
    base = Path(str(node)).resolve().parent if isinstance(node, Path) else None
    return tuple(parse_catalog(text, base))
