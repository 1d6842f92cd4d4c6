"""Filters that read artifacts: how a filter declares them and how ``curate`` wires them.

A filter's *config* may define ``requires() -> dict[str, str]``: stage input name -> artifact
kind (a classifier, a model and its tokenizer ...). The ``curate`` stage's inputs are the union
of its filters' requirements (:func:`curate_inputs`, given to the component as a function of
the config, so validation checks the wiring like any stage's). Before filtering, the stage
builds each filter and calls its ``bind(inputs)`` with the wired artifacts it asked for
(:func:`build_filters`); ``bind`` loads what it needs (and must leave the filter picklable:
filters travel to worker processes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmforge import ConfigValueError, InputSlot, StageInputError


def filter_requires(config: Any) -> dict[str, str]:
    """What one filter config asks for (``{}`` when it reads no artifact)."""
    requires = getattr(config, "requires", None)
    return dict(requires()) if callable(requires) else {}


def curate_inputs(config: Any) -> dict[str, InputSlot]:
    """The curate stage's input slots for ``config``: one per artifact its filters require."""
    slots: dict[str, InputSlot] = {}
    for i, f in enumerate(getattr(config, "filters", ()) or ()):
        for name, kind in filter_requires(f).items():
            have = slots.get(name)
            if have is not None and have.accepts != (kind,):
                raise ConfigValueError(f"filter {i} ({getattr(f, 'type', '?')}) needs input "
                                       f"{name!r} to be a {kind}, but another filter needs "
                                       f"it to be a {have.accepts[0]}; give one of them "
                                       f"another input name", ("filters", i))
            slots[name] = InputSlot((kind,), help=f"filter {i} ({getattr(f, 'type', '?')}) "
                                    f"reads it: add 'inputs: {{{name}: <stage id>}}'")
    return slots


def build_filters(ctx: Any, configs: Sequence[Any]) -> list[Any]:
    """Build each filter with ``ctx.build("filter", cfg)`` and bind the artifacts it requires
    from ``ctx.inputs``."""
    filters = []
    for i, cfg in enumerate(configs):
        f = ctx.build("filter", cfg)
        needs = filter_requires(cfg)
        if needs:
            missing = [n for n in needs if n not in ctx.inputs]
            if missing:
                raise StageInputError(f"stage {ctx.stage_id!r}: filter {i} ({cfg.type}) needs "
                                      f"inputs {missing}; wire them under 'inputs:'")
            bind = getattr(f, "bind", None)
            if not callable(bind):
                raise TypeError(f"filter {cfg.type!r} requires inputs but has no bind()")
            bind({n: ctx.inputs[n] for n in needs})
        filters.append(f)
    return filters
