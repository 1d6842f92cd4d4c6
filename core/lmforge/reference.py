"""A Markdown spec reference generated from the installed components' config models
(``lmforge schema --format markdown``; ``docs/spec-reference.md`` is the output of
``lmforge schema --first-party --format markdown``, lmforge's own plugins only)."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from lmforge.components import STAGE_KINDS
from lmforge.plugins import PluginManager
from lmforge.spec.assemble import PipelineBase, StageBase


def type_label(tp: Any, sep: str = " | ") -> str:
    """A readable name for a config field's type, as a spec writer thinks of it.

    ``Annotated`` metadata is dropped, ``None`` in a union prints as ``null`` (last), literals as
    their values, a union of component configs as ``{type: a | b, ...}``, a nested config model
    as ``mapping`` (its keys are listed separately), containers as ``list[...]``/``dict[...]``.
    ``sep`` joins alternatives (the Markdown reference passes an escaped bar).
    """
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return type_label(typing.get_args(tp)[0], sep)
    if origin is typing.Literal:
        return sep.join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        real = [a for a in args if a is not type(None)]
        if real and all(_component_model(a) for a in real):
            names = [typing.get_args(a.model_fields["type"].annotation)[0] for a in real]
            label = "{type: " + sep.join(names) + ", ...}"
        else:
            label = sep.join(type_label(a, sep) for a in real)
        return label + (f"{sep}null" if len(real) < len(args) else "")
    if origin is not None:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        args = typing.get_args(tp)
        return f"{name}[{', '.join(type_label(a, sep) for a in args)}]" if args else name
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if _component_model(tp):
        return "{type: " + typing.get_args(tp.model_fields["type"].annotation)[0] + ", ...}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _component_model(tp: Any) -> bool:
    """A component's config as assembled for specs (it has a ``type: Literal[name]`` field)."""
    return isinstance(tp, type) and issubclass(tp, BaseModel) and "type" in tp.model_fields \
        and typing.get_origin(tp.model_fields["type"].annotation) is typing.Literal


def nested_model(tp: Any) -> type[BaseModel] | None:
    """The config model whose keys nest under a field of type ``tp`` (``Model`` or
    ``Model | None``, possibly ``Annotated``); None for scalars, containers and component
    configs (those are selected by ``type`` and documented in their own section)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return nested_model(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        real = [a for a in typing.get_args(tp) if a is not type(None)]
        return nested_model(real[0]) if len(real) == 1 else None
    if isinstance(tp, type) and issubclass(tp, BaseModel) and not _component_model(tp):
        return tp
    return None


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    return _show(info.default_factory() if info.default_factory is not None else info.default)


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "(see fields)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class KeyDoc:
    """One documented config key: dotted ``key`` (``loop.optim.lr``), readable ``type``,
    ``default`` as shown (``required``, a repr, or ``see below`` for a nested block) and
    ``description``."""

    key: str
    type: str
    default: str
    description: str


def config_keys(model: type[BaseModel], skip: tuple[str, ...] = (), sep: str = " | ",
                ) -> list[KeyDoc]:
    """Every key of ``model``, nested config models' keys included right after their parent
    (``loop``, ``loop.steps`` ...), with the defaults the parent's default gives them. Used by
    the spec reference and ``lmforge plugins info``."""
    return _keys(model, skip, "", 0, None, sep)


def _keys(model: type[BaseModel], skip: tuple[str, ...], prefix: str, depth: int,
          defaults: dict[str, Any] | None, sep: str) -> list[KeyDoc]:
    out = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        nested = nested_model(info.annotation) if depth < 8 else None
        default = _show(defaults[name]) if defaults and name in defaults else _default(info)
        inner: dict[str, Any] | None = None
        if nested is not None and not info.is_required():
            value = defaults[name] if defaults and name in defaults else (
                info.default_factory() if info.default_factory is not None  # type: ignore[call-arg]
                else info.default)
            if isinstance(value, BaseModel):
                inner = {k: getattr(value, k) for k in type(value).model_fields}
            elif isinstance(value, dict):
                inner = dict(value)
            if value is not None:
                default = "see below"
        out.append(KeyDoc(f"{prefix}{name}", type_label(info.annotation, sep), default,
                          (info.description or "").replace("\n", " ")))
        if nested is not None:
            out += _keys(nested, (), f"{prefix}{name}.", depth + 1, inner, sep)
    return out


def _fields(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for k in config_keys(model, skip, sep=" \\| "):
        desc = k.description.replace("|", "\\|")
        rows.append(f"| `{k.key}` | {k.type} | `{k.default}` | {desc} |")
    return rows


def markdown_reference(pm: PluginManager) -> str:
    out = ["# Spec reference", "",
           "Generated by `lmforge schema --format markdown` from the installed plugins; do not "
           "edit by hand.", "", "## Pipeline", ""]
    out += _fields(PipelineBase) + [
        "| `trackers` | list[{type: ...}] | `[]` | Trackers for this run (components of kind "
        "`tracker`). |",
        "| `stages` | list[stage] | required | The stages (below). |", "", "## Every stage", ""]
    out += _fields(StageBase) + [
        "| `kind` | stage kind | required | " + ", ".join(STAGE_KINDS) + " |",
        "| `plugin` | str | required | the stage component's name within its kind |",
        "| `config` | mapping | per plugin | the plugin's config (below) |", ""]
    for kind in STAGE_KINDS:
        comps = pm.components(f"stage:{kind}")
        if not comps:
            continue
        out += [f"## Stage kind `{kind}`", ""]
        for c in comps:
            out += [f"### `{kind}` / `{c.name}`", "", f"{c.description} "
                    f"(plugin `{c.plugin}`, {c.distribution})", ""]
            if callable(c.inputs):
                out += ["Inputs: depend on the config", ""]
            elif c.inputs:
                out += ["Inputs: " + "; ".join(
                    f"`{k}` ({'a list of ' if v.many else ''}{' or '.join(v.accepts)}"
                    f"{'' if v.required else ', optional'})"
                    for k, v in c.inputs.items()), ""]
            outs = c.outputs if isinstance(c.outputs, dict) else None
            out += [("Outputs: " + ", ".join(f"`{k}` ({v})" for k, v in outs.items()))
                    if outs else "Outputs: depend on the config", ""]
            out += _fields(pm.component_config_model(c.kind, c.name)) + [""]
    for kind in sorted(k for k in pm.kinds() if not k.startswith("stage:")):
        out += [f"## Components of kind `{kind}`", "",
                f"Selected with `{{type: <name>, ...}}` wherever a config takes a `{kind}`.", ""]
        for c in pm.components(kind):
            out += [f"### `{kind}` / `{c.name}`", "", f"{c.description} (plugin `{c.plugin}`)", ""]
            out += _fields(pm.component_config_model(c.kind, c.name), skip=("type",)) + [""]
    return "\n".join(out).rstrip() + "\n"
