"""Components: the units plugins contribute, and the config base class they share.

A plugin contributes :class:`Component` records through the ``lmforge_components`` hook. A
component has a *kind* (what it is: a stage of kind ``train``, an ``architecture``, a ``filter``
...), a *name* unique within its kind, a pydantic *config* model, and a *factory* that builds the
working object from a validated config.

The factory is usually given as an import string ``"package.module:attr"`` so that discovering a
plugin imports only its light registration module; the heavy module (torch, datasets ...) is
imported the first time the component is built.

Config models may nest other components through :class:`Slot`::

    class PretrainConfig(Config):
        model: Annotated[Config, Slot("architecture")]
        filters: list[Annotated[Config, Slot("filter")]] = []

When the spec models are assembled, every ``Slot`` field is replaced by a discriminated union of
the installed components of that kind, keyed by a ``type`` field, so ``model: {type: dense, ...}``
in YAML validates against the ``dense`` architecture's own config model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

#: Stage kinds the runner knows. A stage component's ``kind`` is ``"stage:<one of these>"``.
STAGE_KINDS: tuple[str, ...] = ("data", "tokenizer", "train", "align", "evaluate", "export")

#: Artifact kinds handed between stages. Inputs declare which kinds they accept, so a wrong
#: wiring is a validation error before anything runs.
ARTIFACT_KINDS: tuple[str, ...] = (
    "dataset/text",  # documents: a ``text`` column
    "dataset/chat",  # conversations: a ``messages`` column of {role, content}
    "dataset/preference",  # pairs: ``prompt`` (messages), ``chosen`` and ``rejected`` (str)
    "dataset/multiple-choice",  # ``question``, ``choices`` (list[str]), ``answer`` (int)
    "tokenizer",
    "model",
    "report",
    "hf-model",
)


class Config(BaseModel):
    """Base class of every component config: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


@dataclass(frozen=True)
class Slot:
    """Marks a config field that holds the config of another component of ``kind``."""

    kind: str


@dataclass(frozen=True)
class InputSlot:
    """An input a stage component consumes: which artifact kinds it accepts, and whether required."""

    accepts: tuple[str, ...]
    required: bool = True
    help: str = ""


OutputsFn = Callable[[Any], Mapping[str, str]]


@dataclass(frozen=True)
class Component:
    """A named, configurable piece contributed by a plugin.

    Attributes:
        kind: ``"stage:<stage kind>"`` for stages; otherwise a free-form kind such as
            ``"architecture"``, ``"backend"``, ``"source"``, ``"filter"``, ``"tracker"``.
        name: unique within ``kind``; what a spec writes to select it.
        config: the pydantic model of its config (a :class:`Config` subclass).
        factory: ``"module:attr"`` or a callable. For stages it is called as
            ``factory(config, ctx)`` and returns a :class:`lmforge.Stage`; for other kinds the
            calling code documents the signature (``ctx.build`` passes ``config`` first).
        description: one line shown by ``lmforge plugins list``.
        inputs: for stages, the named inputs and the artifact kinds each accepts.
        outputs: for stages, output name -> artifact kind; or a function of the validated config
            that returns that mapping (for stages whose output kind depends on config).
    """

    kind: str
    name: str
    config: type[Config]
    factory: str | Callable[..., Any]
    description: str = ""
    inputs: Mapping[str, InputSlot] = field(default_factory=dict)
    outputs: Mapping[str, str] | OutputsFn = field(default_factory=dict)
    # Filled in by the plugin manager: which plugin (entry point) and distribution provided it.
    plugin: str = ""
    distribution: str = ""
    version: str = ""

    @property
    def stage_kind(self) -> str | None:
        return self.kind.split(":", 1)[1] if self.kind.startswith("stage:") else None

    def output_kinds(self, config: Any) -> dict[str, str]:
        outs = self.outputs(config) if callable(self.outputs) else self.outputs
        return dict(outs)

    def load_factory(self) -> Callable[..., Any]:
        """Import and return the factory (this is where heavy imports happen)."""
        if callable(self.factory):
            return self.factory
        module, _, attr = self.factory.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        return obj


def stage(kind: str, name: str, **kw: Any) -> Component:
    """Shorthand for a stage component: ``stage("train", "pretrain", config=..., factory=...)``."""
    if kind not in STAGE_KINDS:
        raise ValueError(f"unknown stage kind {kind!r}; expected one of {', '.join(STAGE_KINDS)}")
    return Component(kind=f"stage:{kind}", name=name, **kw)
