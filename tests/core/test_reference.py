"""The spec reference lists every nested key and prints types readably (issue 8)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field

from lmforge import Component, Config, Slot, hookimpl, stage
from lmforge.plugins import PluginManager
from lmforge.reference import markdown_reference, type_label
from lmforge.testing import plugin_manager


class Inner(Config):
    lr: float = Field(default=0.1, description="Inner learning rate.")
    betas: tuple[float, float] = Field(default=(0.9, 0.95), description="Betas.")


class Middle(Config):
    steps: int = Field(default=3, description="Steps.")
    optim: Inner = Field(default_factory=Inner, description="Optimiser.")
    maybe: Inner | None = Field(default=None, description="Optional nested block.")


class Scale(Config):
    factor: float = Field(default=1.0, description="Factor.")


class StageConfig(Config):
    loop: Middle = Field(default_factory=Middle, description="The loop.")
    scales: list[Annotated[Any, Slot("scaler")]] = Field(default_factory=list,
                                                         description="Scalers.")
    mode: Literal["a", "b"] | None = Field(default=None, description="Mode.")


class Plugin:
    @hookimpl
    def lmforge_components(self) -> list[Component]:
        return [stage("train", "nested", config=StageConfig, factory=dict,
                      outputs={"model": "model"}, description="nested config"),
                Component("scaler", "lin", Scale, factory=dict, description="linear"),
                Component("scaler", "exp", Scale, factory=dict, description="exponential")]


def test_nested_keys_are_listed() -> None:
    text = markdown_reference(plugin_manager(Plugin()))
    for key in ("loop", "loop.steps", "loop.optim", "loop.optim.lr", "loop.optim.betas",
                "loop.maybe", "loop.maybe.lr", "scales", "mode"):
        assert f"| `{key}` |" in text, key
    assert "| `loop.optim.lr` | float | `0.1` | Inner learning rate. |" in text


def test_types_are_readable() -> None:
    text = markdown_reference(plugin_manager(Plugin()))
    assert "| `scales` | list[{type: exp \\| lin, ...}] |" in text
    assert "| `mode` | 'a' \\| 'b' \\| null |" in text
    assert "| `loop.optim.betas` | tuple[float, float] |" in text
    for ugly in ("Annotated", "Union", "NoneType", "typing.", "<class"):
        assert ugly not in text, ugly
    assert type_label(list[Annotated[int | None, "meta"]]) == "list[int | null]"
    assert type_label(dict[str, list[str]]) == "dict[str, list[str]]"
    assert type_label(Any) == "any"


def test_first_party_reference_lists_training_loop_keys() -> None:
    text = markdown_reference(PluginManager.load_first_party())
    for key in ("loop.steps", "loop.batch_size", "loop.optim.lr", "loop.optim.warmup_steps",
                "loop.backend"):
        assert f"| `{key}` |" in text, key
    assert not re.search(r"Annotated|Union\[|NoneType|typing\.", text)


class Custom(Config):
    loop: Middle = Field(default_factory=lambda: Middle(steps=7, optim=Inner(lr=0.5)),
                         description="A loop with its own defaults.")


class CustomPlugin:
    @hookimpl
    def lmforge_components(self) -> list[Component]:
        return [stage("train", "custom", config=Custom, factory=dict,
                      outputs={"model": "model"}, description="custom defaults")]


def test_nested_defaults_come_from_the_parent_default() -> None:
    text = markdown_reference(plugin_manager(CustomPlugin()))
    assert "| `loop.steps` | int | `7` |" in text
    assert "| `loop.optim.lr` | float | `0.5` |" in text
    assert "| `loop.maybe` | mapping \\| null | `None` |" in text
