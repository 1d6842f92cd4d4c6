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

from pydantic import BaseModel, ConfigDict, field_validator

from lmforge.errors import ConfigValueError

#: Stage kinds the runner knows. A stage component's ``kind`` is ``"stage:<one of these>"``.
STAGE_KINDS: tuple[str, ...] = ("data", "tokenizer", "import", "train", "align", "evaluate",
                                "export")

#: Artifact kinds handed between stages. Inputs declare which kinds they accept, so a wrong
#: wiring is a validation error before anything runs.
ARTIFACT_KINDS: tuple[str, ...] = (
    "dataset/text",  # documents: a ``text`` column
    "dataset/chat",  # conversations: a ``messages`` column of {role, content}
    "dataset/preference",  # pairs: ``prompt`` (messages), ``chosen`` and ``rejected`` (str)
    "dataset/multiple-choice",  # ``question``, ``choices`` (list[str]), ``answer`` (int)
    # tasks for generation: ``prompt`` (messages); optional ``reference`` (gold answer),
    # ``tests`` (checks for code, e.g. doctests), ``entry_point`` and other fields
    "dataset/prompt",
    "tokenizer",
    "model",
    "report",
    "hf-model",
    "classifier",  # a text classifier: ``classifier.safetensors`` + ``classifier.json``
)


#: Every integer in a config must fit a signed 64-bit integer (what tensors, numpy and seeds take).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _find_wide_int(value: Any, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], int] | None:
    """``(path, value)`` of the first integer outside int64 in ``value`` (through lists, tuples,
    sets and dict keys/values; nested configs check themselves), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if INT64_MIN <= value <= INT64_MAX else (path, value)
    if isinstance(value, (list, tuple)):
        items: Any = enumerate(value)
    elif isinstance(value, (set, frozenset)):
        items = ((None, v) for v in value)
    elif isinstance(value, dict):
        items = [(None, k) for k in value] + list(value.items())
    else:
        return None
    for key, item in items:
        found = _find_wide_int(item, path if key is None else (*path, key))
        if found:
            return found
    return None


class Config(BaseModel):
    """Base class of every component config: unknown keys are errors, values are immutable,
    floats are finite (no ``inf``/``nan``) and integers fit a signed 64-bit integer."""

    # defer_build: a config class's validator is built when it is first used, not when its
    # module is imported, so discovering plugins and validating a spec (which builds only the
    # assembled spec models) stay fast however many configs the installed plugins define.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(),
                              allow_inf_nan=False, defer_build=True)

    @field_validator("*", mode="after")
    @classmethod
    def _ints_fit_int64(cls, value: Any) -> Any:
        found = _find_wide_int(value)
        if found:
            path, number = found
            digits = len(str(abs(number))) if number.bit_length() < 10_000 else "thousands of"
            raise ConfigValueError(f"integer of {digits} digits does not fit a signed 64-bit "
                                   f"integer (at most {INT64_MAX})", path)
        return value


@dataclass(frozen=True)
class Slot:
    """Marks a config field that holds the config of another component of ``kind``."""

    kind: str


@dataclass(frozen=True)
class InputSlot:
    """An input a stage component consumes: which artifact kinds it accepts, and whether required.

    ``many=True`` makes it take a list of artifacts (``inputs: {candidates: [sft, dpo]}``): each
    listed stage's output must be of an accepted kind, the list must not be empty (when
    required) nor name the same output twice, and its order is kept (it is part of the stage
    key). The runner hands the elements over as ``ctx.inputs["candidates[0]"]``, ... (see
    :func:`input_key`), read together with ``ctx.input_list("candidates")``.
    """

    accepts: tuple[str, ...]
    required: bool = True
    help: str = ""
    many: bool = False


def input_key(slot: str, index: int) -> str:
    """The key of element ``index`` of a ``many`` input ``slot`` in a stage's wired inputs,
    ``ctx.inputs`` and its manifest: ``"candidates[0]"``."""
    return f"{slot}[{index}]"


def split_input_key(key: str) -> tuple[str, int | None]:
    """``"candidates[2]"`` -> ``("candidates", 2)``; a single input's key -> ``(key, None)``."""
    if key.endswith("]") and "[" in key:
        slot, _, index = key[:-1].rpartition("[")
        if index.isdigit():
            return slot, int(index)
    return key, None


OutputsFn = Callable[[Any], Mapping[str, str]]
InputsFn = Callable[[Any], Mapping[str, "InputSlot"]]


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
        inputs: for stages, the named inputs and the artifact kinds each accepts; or a function
            of the validated config that returns that mapping (for stages whose inputs depend
            on config: a ``mix`` takes one input per configured source, a ``curate`` whose
            filter scores with a classifier takes that classifier). Validation wires the
            spec's ``inputs`` against the slots the config yields.
        outputs: for stages, output name -> artifact kind; or a function of the validated config
            that returns that mapping (for stages whose output kind depends on config).
        ranks: for stages in a multi-process run: ``"main"`` — the main rank runs it while the
            others wait (data, tokenizer, export: files are written once); ``"all"`` — every
            rank runs it (distributed training); or a function of the validated config that
            returns one of the two (e.g. "all" only when its backend is distributed, see
            :func:`backend_ranks`).
    """

    kind: str
    name: str
    config: type[Config]
    factory: str | Callable[..., Any]
    description: str = ""
    inputs: Mapping[str, InputSlot] | InputsFn = field(default_factory=dict)
    outputs: Mapping[str, str] | OutputsFn = field(default_factory=dict)
    ranks: str | Callable[[Any], str] = "main"
    # Filled in by the plugin manager: which plugin (entry point) and distribution provided it.
    plugin: str = ""
    distribution: str = ""
    version: str = ""

    @property
    def stage_kind(self) -> str | None:
        return self.kind.split(":", 1)[1] if self.kind.startswith("stage:") else None

    def ranks_for(self, config: Any) -> str:
        """``"main"`` or ``"all"``: which ranks run this stage with ``config``."""
        ranks = self.ranks(config) if callable(self.ranks) else self.ranks
        if ranks not in ("main", "all"):
            raise ValueError(f"component {self.name!r}: ranks must be 'main' or 'all', "
                             f"got {ranks!r}")
        return ranks

    def input_slots(self, config: Any) -> dict[str, InputSlot]:
        """The input slots of this stage with ``config`` (``inputs`` itself, or its result)."""
        return dict(self.inputs(config) if callable(self.inputs) else self.inputs)

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


def backend_ranks(config: Any) -> str:
    """``ranks`` of a stage whose config selects a backend (``config.loop.backend`` or
    ``config.backend``): ``"all"`` when that backend spans processes (its config class says
    ``distributed = True``), else ``"main"``."""
    loop = getattr(config, "loop", None)
    backend = getattr(loop, "backend", None) or getattr(config, "backend", None)
    return "all" if getattr(type(backend), "distributed", False) else "main"


def stage(kind: str, name: str, **kw: Any) -> Component:
    """Shorthand for a stage component: ``stage("train", "pretrain", config=..., factory=...)``."""
    if kind not in STAGE_KINDS:
        raise ValueError(f"unknown stage kind {kind!r}; expected one of {', '.join(STAGE_KINDS)}")
    return Component(kind=f"stage:{kind}", name=name, **kw)
