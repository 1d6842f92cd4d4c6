"""``lmforge new-plugin``: write a new plugin package to start from.

:func:`create_plugin` renders the template package shipped in ``lmforge/templates/plugin/``
(package data; files end in ``.tmpl`` and use :class:`string.Template` placeholders; a path
part ``__package__`` becomes the import package). For ``name="my-filters"`` it writes::

    <dest>/                          distribution lmforge-my-filters
      pyproject.toml                 entry point my-filters = lmforge_my_filters.plugin
      README.md
      src/lmforge_my_filters/
        __init__.py
        plugin.py                    config + lmforge_components (light imports only)
        filters.py                   the filter implementation (imported when built)
      tests/test_plugin.py           check_plugin, the filter on examples, the entry point

The generated tests pass as generated (``pip install -e <dest> && pytest <dest>/tests``).
"""

from __future__ import annotations

import keyword
import re
import string
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from lmforge._version import __version__
from lmforge.errors import LmforgeError

TEMPLATE_SUFFIX = ".tmpl"
PACKAGE_PLACEHOLDER = "__package__"
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


@dataclass(frozen=True)
class PluginNames:
    """The names derived from a plugin name such as ``my-filters``."""

    name: str  # my-filters: the entry-point (plugin) name
    distribution: str  # lmforge-my-filters
    package: str  # lmforge_my_filters
    class_prefix: str  # MyFilters
    component: str  # my-filters-uppercase: the example filter's component name
    core_requirement: str  # lmforge>=0.1

    def substitutions(self) -> dict[str, str]:
        return {"name": self.name, "distribution": self.distribution, "package": self.package,
                "class_prefix": self.class_prefix, "component": self.component,
                "core_requirement": self.core_requirement, "lmforge_version": __version__}


def plugin_names(name: str) -> PluginNames:
    """Normalise and check a plugin name; raise :class:`LmforgeError` when it is unusable.

    Accepted: a letter, then letters, digits and single ``-``/``_`` separators (case is
    folded, ``_`` becomes ``-``, a leading ``lmforge-`` is dropped): ``my-filters``,
    ``Acme_Tools`` -> ``acme-tools``.
    """
    raw = name
    norm = name.strip().lower().replace("_", "-")
    if norm.startswith("lmforge-"):
        norm = norm[len("lmforge-"):]
    if not norm or not _NAME.match(norm):
        raise LmforgeError(
            f"invalid plugin name {raw!r}: use a letter followed by letters, digits and single "
            f"'-' separators, e.g. 'my-filters' (it becomes the distribution 'lmforge-NAME' and "
            f"the import package 'lmforge_NAME')")
    package = "lmforge_" + norm.replace("-", "_")
    if not package.isidentifier() or keyword.iskeyword(package):  # pragma: no cover - regex
        raise LmforgeError(f"invalid plugin name {raw!r}: {package!r} is not a Python name")
    major, minor = __version__.split(".")[:2]
    return PluginNames(
        name=norm, distribution=f"lmforge-{norm}", package=package,
        class_prefix="".join(part.capitalize() for part in norm.split("-")),
        component=f"{norm}-uppercase", core_requirement=f"lmforge>={major}.{minor}")


def _template_root() -> Traversable:
    return resources.files("lmforge").joinpath("templates", "plugin")


def _walk(node: Traversable, rel: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__":
            continue
        if child.is_dir():
            out += _walk(child, (*rel, child.name))
        elif child.name.endswith(TEMPLATE_SUFFIX):
            out.append(((*rel, child.name[:-len(TEMPLATE_SUFFIX)]), child.read_text("utf-8")))
    return out


def render_plugin(names: PluginNames) -> dict[str, str]:
    """Relative path -> content of every file of the new package."""
    subs = names.substitutions()
    files = {}
    for rel, text in _walk(_template_root()):
        path = "/".join(names.package if part == PACKAGE_PLACEHOLDER else part for part in rel)
        try:
            files[path] = string.Template(text).substitute(subs)
        except (KeyError, ValueError) as exc:  # a broken template is a bug in lmforge
            raise LmforgeError(f"plugin template {'/'.join(rel)} is broken: {exc!r}") from exc
    if not files:
        raise LmforgeError("the plugin template is missing from this lmforge installation "
                           "(lmforge/templates/plugin); reinstall lmforge")
    return files


def create_plugin(name: str, dest: Path, *, force: bool = False) -> Path:
    """Write the package ``lmforge-<name>`` into ``dest`` (its root); return ``dest`` resolved.

    Raises :class:`LmforgeError` if ``name`` is invalid, ``dest`` is a file, or ``dest`` is a
    non-empty directory and ``force`` is false (with ``force`` existing files are overwritten,
    others are left alone).
    """
    names = plugin_names(name)
    root = Path(dest).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise LmforgeError(f"cannot create plugin {names.distribution} in {root}: it is a file")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise LmforgeError(f"cannot create plugin {names.distribution} in {root}: the directory "
                           f"exists and is not empty (choose another --dir, or --force to write "
                           f"into it)")
    files = render_plugin(names)
    from lmforge.fsutil import atomic_write_text

    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)
    return root
