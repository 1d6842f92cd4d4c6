"""``lmforge.testing.check_plugin`` builds components from their default configs and pickles
filters, as the data stage does with ``num_proc > 1``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from lmforge import Component, Config, FilterResult, hookimpl
from lmforge.testing import check_plugin


class RatioConfig(Config):
    max_ratio: float = Field(default=0.5, description="Drop above this ratio.")


class RequiredConfig(Config):
    pattern: str = Field(description="Required: no default config to build from.")


class KeepsConfig:
    """The pattern the docs used to show: keeps the validated config (a class lmforge makes at
    run time, so the object cannot be pickled)."""

    name = "keeps-config"

    def __init__(self, config: Any) -> None:
        self.config = config

    def __call__(self, text: str) -> FilterResult:
        return FilterResult.kept()


class PlainValues:
    name = "plain-values"

    def __init__(self, config: Any) -> None:
        self.max_ratio = float(config.max_ratio)

    def __call__(self, text: str) -> FilterResult:
        return FilterResult.kept()


class ReturnsBool(PlainValues):
    def __call__(self, text: str) -> Any:  # not a FilterResult
        return True


def broken_factory(config: Any) -> Any:
    raise RuntimeError("cannot build from the defaults")


def make_plugin(*components: Component) -> Any:
    class Plugin:
        @staticmethod
        @hookimpl
        def lmforge_components() -> list[Component]:
            return list(components)

    return Plugin


def test_a_filter_that_keeps_its_config_is_not_picklable() -> None:
    problems = check_plugin(make_plugin(
        Component("filter", "keeps-config", RatioConfig, factory=KeepsConfig, description="d")))
    assert len(problems) == 1, problems
    assert "filter 'keeps-config'" in problems[0] and "pickl" in problems[0]
    assert "num_proc" in problems[0]


def test_a_picklable_filter_passes() -> None:
    assert check_plugin(make_plugin(
        Component("filter", "plain-values", RatioConfig, factory=PlainValues,
                  description="d"))) == []


def test_a_filter_must_return_a_filter_result() -> None:
    problems = check_plugin(make_plugin(
        Component("filter", "bool", RatioConfig, factory=ReturnsBool, description="d")))
    assert len(problems) == 1 and "FilterResult" in problems[0], problems


def test_factory_failing_on_the_default_config_is_reported() -> None:
    problems = check_plugin(make_plugin(
        Component("evaluator", "broken", RatioConfig, factory=broken_factory, description="d")))
    assert len(problems) == 1, problems
    assert "default config" in problems[0] and "cannot build from the defaults" in problems[0]


def test_components_without_a_default_config_are_not_built() -> None:
    assert check_plugin(make_plugin(
        Component("filter", "needs-pattern", RequiredConfig, factory=broken_factory,
                  description="d"))) == []


class NeedsOneOf(Config):
    words: list[str] = Field(default_factory=list, description="Words.")
    patterns: list[str] = Field(default_factory=list, description="Patterns.")

    @model_validator(mode="after")
    def _one(self) -> NeedsOneOf:
        if not (self.words or self.patterns):
            raise ValueError("set words or patterns")
        return self


def test_a_config_whose_defaults_do_not_validate_has_no_default() -> None:
    assert check_plugin(make_plugin(
        Component("filter", "needs-one", NeedsOneOf, factory=broken_factory,
                  description="d"))) == []
