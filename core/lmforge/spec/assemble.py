"""Assemble the spec's pydantic models from the installed components.

Each component's config model is copied into a derived model in which every ``Slot(kind)``
field becomes a discriminated union (on ``type``) of the installed components of that kind, and
non-stage components get a ``type: Literal[name]`` field. Stage components become variants
``{id, kind, plugin, inputs, config}`` of a union discriminated first by ``kind``, then by
``plugin``. The result validates a whole pipeline and emits one JSON Schema.
"""

from __future__ import annotations

import copy
import functools
import operator
import types
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lmforge.components import STAGE_KINDS, Component, Config, Slot
from lmforge.specpath import SpecPath

if TYPE_CHECKING:
    from lmforge.plugins import PluginManager

STAGE_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"
#: Stage ids name folders (``<run_dir>/<id>/``), so they are short and need no quoting.
STAGE_ID_MAX_LENGTH = 64
#: The pipeline name is the default run folder (``runs/<name>``): one path component.
PIPELINE_NAME_PATTERN = r"^\w[\w. -]*$"
PIPELINE_NAME_MAX_LENGTH = 100


class StageBase(Config):
    """Fields every stage has, whatever its plugin."""

    id: str = Field(pattern=STAGE_ID_PATTERN, max_length=STAGE_ID_MAX_LENGTH,
                    description="Unique stage id; also the stage's folder under run_dir: a "
                    "letter, then letters, digits, '_' or '-'; at most 64 characters.")
    inputs: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="Input name -> producing stage id (or 'stage_id.output' when it has "
        "several); an input that takes several artifacts takes a list of them.")
    description: str = Field(default="", description="Free text, shown by `lmforge plan`.")


class PipelineBase(Config):
    """Top-level pipeline fields."""

    name: str = Field(default="pipeline", pattern=PIPELINE_NAME_PATTERN,
                      max_length=PIPELINE_NAME_MAX_LENGTH,
                      description="Name of the pipeline (shown in reports; the default run "
                      "folder is runs/<name>): letters, digits, '_', '-', '.' and spaces, not "
                      "starting with '.', '-' or a space; at most 100 characters.")
    run_dir: SpecPath = Field(default="", description="Where stage folders go; a relative "
                              "path is relative to the spec file's folder. Default: "
                              "runs/<name> in the current directory.")
    seed: int = Field(default=0, description="Base random seed; each stage derives its own.")


def _slots(metadata: list[Any]) -> list[Slot]:
    return [m for m in metadata if isinstance(m, Slot)]


class Assembler:
    """Builds (and caches) derived models for one plugin manager's components."""

    def __init__(self, plugins: PluginManager) -> None:
        self.plugins = plugins
        self._models: dict[tuple[str, str], type[Config]] = {}
        self._nested: dict[type, type] = {}
        self._pipelines: dict[frozenset[tuple[str, str]] | None, type[Config]] = {}

    # -- component models ------------------------------------------------------------------
    def component_model(self, component: Component) -> type[Config]:
        key = (component.kind, component.name)
        if key not in self._models:
            extra: dict[str, Any] = {}
            if component.stage_kind is None:
                extra["type"] = (Literal[component.name],  # type: ignore[valid-type]
                                 Field(description=f"Selects the {component.kind} "
                                                   f"{component.name!r}."))
            self._models[key] = self._derive(component.config, extra,
                                             name=_model_name(component))
        return self._models[key]

    def slot_union(self, kind: str) -> Any:
        members = [self.component_model(c) for c in self.plugins.components(kind)]
        if not members:
            return _NoneInstalled(kind).annotation()
        if len(members) == 1:
            return members[0]
        return Annotated[Union[tuple(members)], Field(discriminator="type")]  # noqa: UP007

    def _derive(self, model: type[BaseModel], extra: dict[str, Any], name: str) -> type[Config]:
        fields: dict[str, Any] = dict(extra)
        for fname, info in model.model_fields.items():
            slots = _slots(info.metadata)
            if slots:
                new_ann = self.slot_union(slots[0].kind)
            else:
                new_ann = self._rewrite(info.annotation)
            if new_ann is info.annotation and not slots:
                continue
            new_info = _revalidated(info)
            if typing.get_origin(new_ann) is Annotated:
                # A FieldInfo given to create_model wins over Field() metadata inside Annotated,
                # so carry the union's discriminator over explicitly.
                base, *meta = typing.get_args(new_ann)
                for m in meta:
                    if isinstance(m, FieldInfo) and m.discriminator:
                        new_info.discriminator = m.discriminator
                        new_ann = base
            fields[fname] = (new_ann, new_info)
        if not fields:
            return model  # type: ignore[return-value]
        return create_model(name, __base__=model, __module__=model.__module__, **fields)

    def _rewrite(self, tp: Any) -> Any:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            base, *meta = typing.get_args(tp)
            slots = _slots(meta)
            if slots:
                return self.slot_union(slots[0].kind)
            new = self._rewrite(base)
            return tp if new is base else Annotated[(new, *meta)]  # type: ignore[misc]
        if origin in (Union, types.UnionType):
            args = typing.get_args(tp)
            new_args = tuple(self._rewrite(a) for a in args)
            if all(a is b for a, b in zip(args, new_args)):
                return tp
            return functools.reduce(operator.or_, new_args) if origin is types.UnionType \
                else Union[new_args]  # noqa: UP007
        if origin in (list, dict, tuple, set, frozenset, typing.Literal) or origin is not None:
            args = typing.get_args(tp)
            if origin is Literal or not args:
                return tp
            new_args = tuple(self._rewrite(a) for a in args)
            if all(a is b for a, b in zip(args, new_args)):
                return tp
            return origin[new_args] if len(new_args) > 1 else origin[new_args[0]]
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in self._nested:
                self._nested[tp] = tp  # guards recursion
                self._nested[tp] = self._derive(tp, {}, name=tp.__name__)
            return self._nested[tp]
        return tp

    # -- stages and pipeline -------------------------------------------------------------------
    def stage_model(self, component: Component) -> type[Config]:
        config_model = self.component_model(component)
        # Without required fields the config may be left out (its defaults apply). Decided from
        # the fields, not by building an instance: that would build this model's validator
        # (pydantic's defer_build) for every installed stage on every validation.
        config_field: Any = (config_model, ...)
        if not any(f.is_required() for f in config_model.model_fields.values()):
            config_field = (config_model, Field(default_factory=config_model))
        return create_model(
            f"{_model_name(component)}Stage", __base__=StageBase,
            kind=(Literal[component.stage_kind], ...),  # type: ignore[valid-type]
            plugin=(Literal[component.name],  # type: ignore[valid-type]
                    Field(description=f"{component.description or component.name} "
                                      f"[{component.distribution}]")),
            config=config_field)

    def stage_union(self, only: frozenset[tuple[str, str]] | None = None) -> Any:
        """The union of the stage variants: every installed stage component, or those whose
        ``(kind, name)`` is in ``only``."""
        by_kind = []
        for kind in STAGE_KINDS:
            variants = [self.stage_model(c) for c in self.plugins.components(f"stage:{kind}")
                        if only is None or (c.kind, c.name) in only]
            if not variants:
                continue
            by_kind.append(variants[0] if len(variants) == 1 else
                           Annotated[Union[tuple(variants)], Field(discriminator="plugin")])  # noqa: UP007
        if not by_kind:
            return _NoneInstalled("stage").annotation()
        if len(by_kind) == 1:
            return by_kind[0]
        return Annotated[Union[tuple(by_kind)], Field(discriminator="kind")]  # noqa: UP007

    def pipeline_model(self, stages: Iterable[Component] | None = None) -> type[Config]:
        """The model of a whole pipeline. With ``stages``, its stage union holds only those
        components' variants: validating a spec then builds the validators of the stages it
        uses (and the slots they nest), not of every installed stage. The caller must have
        checked that each stage of the spec names one of ``stages`` (validation does, reporting
        unknown kinds and plugins itself)."""
        only = None if stages is None else frozenset((c.kind, c.name) for c in stages)
        if only not in self._pipelines:
            tracker = self.slot_union("tracker")
            self._pipelines[only] = create_model(
                "Pipeline", __base__=PipelineBase,
                trackers=(list[tracker], Field(  # type: ignore[valid-type]
                    default_factory=list, description="Trackers for this run, e.g. "
                    "[{type: wandb, project: my-project}]. Metrics always go to each stage's "
                    "metrics.jsonl and the console.")),
                stages=(list[self.stage_union(only)],  # type: ignore[misc]
                        Field(min_length=1, description="The stages, in any order; they run "
                              "in the order their inputs require.")))
        return self._pipelines[only]


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def _revalidated(info: FieldInfo) -> FieldInfo:
    """A copy of ``info`` whose default is re-validated against the derived annotation.

    Defaults written against the plugin's own model (a base-class instance, or a ``{"type": ...}``
    dict for a slot) are turned into plain data and validated, so they become derived instances.
    """
    new = copy.copy(info)
    new.metadata = [m for m in info.metadata if not isinstance(m, Slot)]
    if info.default_factory is not None:
        factory = info.default_factory
        new.default_factory = lambda: _dump(factory())  # type: ignore[call-arg,misc]
        new.validate_default = True
    elif info.default is not PydanticUndefined and info.default is not None:
        new.default = _dump(info.default)
        new.validate_default = True
    return new


class _NoneInstalled:
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def annotation(self) -> Any:
        from pydantic import AfterValidator

        kind = self.kind

        def fail(_: Any) -> Any:
            raise ValueError(f"no {kind} component is installed")

        return Annotated[dict, AfterValidator(fail)]


def _model_name(c: Component) -> str:
    parts = [p for p in c.kind.replace(":", "-").split("-") + c.name.replace("_", "-").split("-")
             if p]
    return "".join(p[:1].upper() + p[1:] for p in parts)

