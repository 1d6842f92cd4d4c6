"""Plugin discovery (stevedore), registration (pluggy) and the component registry.

Discovery: every entry point in the group ``lmforge.plugins`` names a module (or object) of hook
implementations. stevedore loads them; a plugin that fails to import is recorded as a
:class:`LoadFailure` (entry point, distribution, version, error) and the others keep working.

Controls (also available as CLI options, see ``lmforge --help``):

* ``LMFORGE_DISABLE_PLUGIN_AUTOLOAD=1`` — load no entry points; only ``-p`` modules.
* ``LMFORGE_PLUGINS=name,name`` — allow-list of entry-point names to load.
* ``-p package.module`` — register an in-house plugin module by import path, unpackaged.
* ``LMFORGE_TRACE_HOOKS=1`` — print every hook call and result to stderr.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pluggy

from lmforge import hookspecs
from lmforge.components import Component, Config
from lmforge.errors import PluginError

ENTRY_POINT_GROUP = "lmforge.plugins"
ENV_DISABLE = "LMFORGE_DISABLE_PLUGIN_AUTOLOAD"
ENV_ALLOW = "LMFORGE_PLUGINS"
ENV_TRACE = "LMFORGE_TRACE_HOOKS"
FIRST_PARTY_DISTRIBUTION = "lmforge"


@dataclass(frozen=True)
class LoadFailure:
    """A plugin that could not be loaded, and why."""

    entry_point: str  # "name = value"
    name: str
    distribution: str
    version: str
    error: str

    def format(self) -> str:
        return (f"plugin {self.name!r} (entry point '{self.entry_point}' of "
                f"{self.distribution} {self.version}) failed to load: {self.error}")


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin: its pluggy name, where it came from, and what it contributes."""

    name: str
    module: str
    distribution: str
    version: str
    components: tuple[Component, ...]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _distributions(group: str) -> dict[tuple[str, str], tuple[str, str]]:
    """``(entry-point name, value) -> (distribution, version)`` for the group's entry points.
    One scan of the installed metadata (each scan reads every distribution's files, so it is
    done once per load, not once per plugin)."""
    owners: dict[tuple[str, str], tuple[str, str]] = {}
    for ep in md.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        if dist is not None:
            owners.setdefault((ep.name, ep.value), (dist.metadata["Name"], dist.version))
    return owners


class PluginManager:
    """The pluggy manager plus the registry of contributed components.

    Build one with :meth:`load`; tests use :func:`lmforge.testing.plugin_manager`.
    """

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[LoadFailure] = []
        self.conflicts: list[str] = []
        self.plugins: dict[str, PluginInfo] = {}
        self._components: dict[tuple[str, str], Component] = {}
        self._assembler: Any = None
        # How :meth:`load` was asked to discover installed plugins (explains a missing one).
        self.autoload = False
        self.allow: tuple[str, ...] | None = None

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, *, autoload: bool | None = None, allow: Sequence[str] | None = None,
             modules: Sequence[str] = (), trace: bool | None = None) -> PluginManager:
        """Discover entry-point plugins (unless disabled), add ``modules``, gather components."""
        self = cls()
        if autoload is None:
            autoload = not _truthy(os.environ.get(ENV_DISABLE))
        if allow is None and os.environ.get(ENV_ALLOW):
            allow = [n.strip() for n in os.environ[ENV_ALLOW].split(",") if n.strip()]
        if trace is None:
            trace = _truthy(os.environ.get(ENV_TRACE))
        if trace:
            self.enable_trace()
        self.autoload = bool(autoload)
        self.allow = tuple(allow) if allow is not None and autoload else None
        if autoload:
            self._load_entry_points(allow)
        for module in modules:
            self.register_module(module)
        return self

    @classmethod
    def load_first_party(cls, *, trace: bool = False) -> PluginManager:
        """Only the plugins of the ``lmforge`` distribution itself, whatever else is installed
        (and whatever the ``LMFORGE_*`` variables say): what the generated spec reference
        documents and what the project's own tests check."""
        ours = sorted({ep.name for ep in md.entry_points(group=ENTRY_POINT_GROUP)
                       if getattr(ep, "dist", None) is not None
                       and ep.dist.metadata["Name"] == FIRST_PARTY_DISTRIBUTION})
        self = cls()
        if trace:
            self.enable_trace()
        self.autoload, self.allow = True, tuple(ours)
        # A third party's entry point may reuse one of our names: keep only ours.
        self._load_entry_points(ours, distribution=FIRST_PARTY_DISTRIBUTION)
        return self

    def _load_entry_points(self, allow: Sequence[str] | None,
                           distribution: str | None = None) -> None:
        """Load the group's entry points (only ``allow``ed names, only from ``distribution``
        when given). Two distributions using one entry-point name is a recorded conflict."""
        from stevedore import ExtensionManager, NamedExtensionManager

        owners: dict[tuple[str, str], tuple[str, str]] = {}

        def _distribution_of(ep_name: str, ep_value: str) -> tuple[str, str]:
            if not owners:
                owners.update(_distributions(ENTRY_POINT_GROUP))
            return owners.get((ep_name, ep_value), ("<unknown distribution>", "?"))

        def on_failure(_manager: Any, ep: Any, exc: BaseException) -> None:
            dist, version = _distribution_of(ep.name, ep.value)
            if distribution is not None and dist != distribution:
                return
            self.failures.append(LoadFailure(entry_point=f"{ep.name} = {ep.value}", name=ep.name,
                                             distribution=dist, version=version,
                                             error=f"{type(exc).__name__}: {exc}"))

        kwargs = dict(namespace=ENTRY_POINT_GROUP, invoke_on_load=False,
                      on_load_failure_callback=on_failure)
        if allow is not None:
            mgr = NamedExtensionManager(names=list(allow), name_order=True, **kwargs)
        else:
            mgr = ExtensionManager(**kwargs)
        for ext in sorted(mgr.extensions, key=lambda e: e.name):
            dist, version = _distribution_of(ext.name, ext.entry_point.value)
            if distribution is not None and dist != distribution:
                continue
            if ext.name in self.plugins:
                other = self.plugins[ext.name]
                self.conflicts.append(
                    f"entry point {ext.name!r} is declared by both {other.distribution} "
                    f"{other.version} and {dist} {version} ({ext.entry_point.value}); only the "
                    f"first is loaded: uninstall one of them")
                continue
            self.register(ext.plugin, name=ext.name, distribution=dist, version=version)

    def register_module(self, module_path: str) -> str:
        """Register an importable module as a plugin (the ``-p`` option); return its name.

        The current directory is searched too (as with ``python -m``), so an in-house plugin
        module next to the spec needs no packaging. A module that is already registered (an
        installed plugin's entry point) is left as it is (see :meth:`register`).
        """
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_path)
        except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
            raise PluginError(f"-p {module_path}: cannot import plugin module: "
                              f"{type(exc).__name__}: {exc}") from exc
        return self.register(module, name=module_path, distribution="<-p option>", version="")

    def register(self, plugin: Any, *, name: str, distribution: str = "<in-process>",
                 version: str = "") -> str:
        """Register ``plugin`` (module or object with hook implementations) and its components;
        return the name it is registered under.

        Registering an object that is already registered (under any name) is a no-op that
        returns its existing name: an installed plugin named again with ``-p`` or passed to
        ``lmforge.testing.plugin_manager(plugin, autoload=True)`` keeps its entry-point name
        and is not counted twice. A *different* object under a taken name raises
        :class:`PluginError`.
        """
        existing = self.pm.get_name(plugin)
        if existing is not None:
            return existing
        if self.pm.has_plugin(name) or name in self.plugins:
            raise PluginError(f"a plugin named {name!r} is already registered")
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            self.failures.append(LoadFailure(entry_point=name, name=name, distribution=distribution,
                                             version=version, error=f"invalid hooks: {exc}"))
            return name
        contributed: list[Component] = []
        impl = next((i for i in self.pm.hook.lmforge_components.get_hookimpls()
                     if i.plugin is plugin), None)
        if impl is not None:
            try:
                result = impl.function()
                contributed = list(result or [])
                for c in contributed:
                    if not isinstance(c, Component):
                        raise TypeError(f"lmforge_components returned {type(c).__name__}, "
                                        f"expected lmforge.Component")
            except Exception as exc:  # noqa: BLE001
                self.pm.unregister(plugin)
                self.failures.append(LoadFailure(entry_point=name, name=name,
                                                 distribution=distribution, version=version,
                                                 error=f"lmforge_components raised "
                                                       f"{type(exc).__name__}: {exc}"))
                return name
        stamped = []
        for c in contributed:
            c = _restamp(c, plugin=name, distribution=distribution, version=version)
            key = (c.kind, c.name)
            if key in self._components:
                other = self._components[key]
                self.conflicts.append(
                    f"component {c.kind} {c.name!r} is provided by both {other.distribution} "
                    f"{other.version} (plugin {other.plugin!r}) and {distribution} {version} "
                    f"(plugin {name!r}); uninstall one of them or disable one with "
                    f"{ENV_ALLOW}")
                continue
            self._components[key] = c
            stamped.append(c)
        self.plugins[name] = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)),
                                        distribution=distribution, version=version,
                                        components=tuple(stamped))
        self._assembler = None
        return name

    def unregister(self, name: str) -> None:
        info = self.plugins.pop(name, None)
        if info is not None:
            for c in info.components:
                self._components.pop((c.kind, c.name), None)
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self._assembler = None

    def enable_trace(self, write: Any = None) -> None:
        """Print every hook call with its arguments and result (to stderr by default)."""
        self.pm.trace.root.setwriter(write or (lambda s: sys.stderr.write(s)))
        self.pm.enable_tracing()

    # -- hooks -----------------------------------------------------------------------------
    @property
    def hook(self) -> Any:
        return self.pm.hook

    def call_lifecycle(self, name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook; an exception in one implementation is reported, not raised."""
        caller = getattr(self.pm.hook, name)
        impls = caller.get_hookimpls()
        if len(impls) <= 1:
            try:
                caller(**kwargs)
            except Exception as exc:  # noqa: BLE001 - trackers must never fail a run
                sys.stderr.write(f"warning: hook {name} of plugin {impls[0].plugin_name!r} "
                                 f"raised {type(exc).__name__}: {exc}\n")
            return
        for impl in reversed(impls):
            # One pluggy call per implementation (so tracing and monitoring still see it), so
            # that one failing tracker does not stop the others.
            others = [i.plugin for i in impls if i.plugin is not impl.plugin]
            try:
                self.pm.subset_hook_caller(name, remove_plugins=others)(**kwargs)
            except Exception as exc:  # noqa: BLE001 - trackers must never fail a run
                sys.stderr.write(f"warning: hook {name} of plugin {impl.plugin_name!r} raised "
                                 f"{type(exc).__name__}: {exc}\n")

    # -- components ------------------------------------------------------------------------
    def components(self, kind: str | None = None) -> list[Component]:
        found = [c for (k, _), c in self._components.items() if kind is None or k == kind]
        return sorted(found, key=lambda c: (c.kind, c.name))

    def kinds(self) -> list[str]:
        return sorted({k for k, _ in self._components})

    def get_component(self, kind: str, name: str) -> Component:
        try:
            return self._components[(kind, name)]
        except KeyError:
            raise PluginError(self.explain_missing(kind, name)) from None

    def explain_missing(self, kind: str, name: str) -> str:
        """Why ``(kind, name)`` is not available, with a did-you-mean or install hint."""
        label = f"stage plugin {name!r} of kind {kind[6:]!r}" if kind.startswith("stage:") \
            else f"{kind} {name!r}"
        from lmforge.catalog import load_catalog

        for entry in load_catalog():
            if any(c.kind == kind and c.name == name for c in entry.components):
                for f in self.failures:
                    if f.name in entry.entry_points or f.distribution == entry.distribution:
                        return (f"{label} is provided by plugin {f.name!r} "
                                f"({f.distribution} {f.version}), which failed to load: {f.error}")
                return self._explain_not_loaded(label, entry)
        names = [c.name for c in self.components(kind)]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (
            f"; installed: {', '.join(names)}" if names else "; none is installed")
        broken = "".join(f"; note: {f.format()} — it may provide it" for f in self.failures)
        return f"no {label}{hint}{broken}"

    def _explain_not_loaded(self, label: str, entry: Any) -> str:
        """Why a component the catalog attributes to ``entry`` is missing: not installed,
        installed but not loaded (autoload off, allow-list), or installed without it."""
        version = _installed_version(entry.distribution)
        if version is None:
            return (f"{label} is provided by {entry.distribution}, which is not installed: "
                    f"pip install '{entry.requirement}'")
        eps = [ep for ep in entry.entry_points if ep not in self.plugins] or list(
            entry.entry_points)
        which = ", ".join(repr(ep) for ep in eps)
        head = (f"{label} is provided by plugin {which} of {entry.distribution} {version}, "
                f"which is installed but not loaded")
        if not self.autoload:
            return (f"{head}: loading of installed plugins is off (--no-autoload or "
                    f"{ENV_DISABLE}=1; in tests, lmforge.testing.plugin_manager() loads only "
                    f"the plugins you pass: pass autoload=True or that plugin's module)")
        if self.allow is not None:
            return (f"{head}: it is not in the allow-list (--plugins / {ENV_ALLOW}="
                    f"{','.join(self.allow)}); add {','.join(eps)} to it")
        return (f"{label} is listed in the catalog for {entry.distribution}, but the installed "
                f"{entry.distribution} {version} does not provide it: pip install -U "
                f"'{entry.requirement}'")

    def component_config_model(self, kind: str, name: str) -> type[Config]:
        """The component's config model as used in specs: ``Slot`` fields resolved to unions of
        the installed components, and (for non-stage kinds) a ``type: Literal[name]`` field."""
        return self.assembler().component_model(self.get_component(kind, name))

    def assembler(self) -> Any:
        if self._assembler is None:
            from lmforge.spec.assemble import Assembler

            self._assembler = Assembler(self)
        return self._assembler

    def check_usable(self) -> None:
        """Raise :class:`PluginError` when component names conflict (ambiguous selection)."""
        if self.conflicts:
            raise PluginError("\n".join(self.conflicts))


def _installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return None


def _restamp(c: Component, **fields: str) -> Component:
    from dataclasses import replace

    return replace(c, **fields)


def iter_hook_names() -> Iterable[str]:
    """Names of every hook specification (documented in docs/architecture.md)."""
    return sorted(n for n in dir(hookspecs) if n.startswith("lmforge_"))
