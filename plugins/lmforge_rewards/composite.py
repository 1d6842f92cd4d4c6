"""The ``composite`` reward: ``sum_i weight_i * reward_i(sample)`` over its terms.

Its terms are built when it is (through the plugin manager of the ``StageContext.build`` call
in progress, :func:`lmforge.stages.building_plugins`), so ``requires()`` is the union of the
terms' needs and ``check``/``setup``/``close`` reach every term. Details hold each term's score
and details under ``terms``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmforge.rewards import Reward, RewardOutput, RewardSample


def _term_config(plugins: Any, value: Any, index: int) -> Any:
    """A term's validated config. The spec validates the terms of a top-level composite; the
    terms of a composite nested in it arrive as plain dicts (the spec schema stops recursing
    there) and are validated here, with the same models."""
    if not isinstance(value, Mapping):
        return value
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ValueError(f"composite reward: rewards[{index}].reward needs a 'type'")
    return plugins.component_config_model("reward", kind).model_validate(dict(value))


class Composite(Reward):
    """Config: :class:`lmforge_rewards.config.CompositeConfig`."""

    def __init__(self, config: Any, plugins: Any = None) -> None:
        super().__init__(config)
        from lmforge.stages import building_plugins

        plugins = plugins or building_plugins()
        if plugins is None:
            raise RuntimeError("the composite reward builds its terms through a plugin manager: "
                               "build it with StageContext.build('reward', config) or pass "
                               "plugins=")
        self.weights = [float(t.weight) for t in config.rewards]
        self.configs = [_term_config(plugins, t.reward, i) for i, t in enumerate(config.rewards)]
        self.terms = []
        for sub in self.configs:
            factory = plugins.get_component("reward", sub.type).load_factory()
            self.terms.append(factory(sub, plugins=plugins) if sub.type == "composite"
                              else factory(sub))

    def requires(self) -> dict[str, str]:
        need: dict[str, str] = {}
        for term in self.terms:
            for name, kind in term.requires().items():
                if need.get(name, kind) != kind:
                    raise ValueError(f"composite reward: terms need input {name!r} as both "
                                     f"{need[name]!r} and {kind!r}")
                need[name] = kind
        return need

    def check(self, inputs: Mapping[str, Any]) -> None:
        for term in self.terms:
            term.check(inputs)

    def setup(self, stage: Any, device: Any) -> None:
        for term in self.terms:
            term.setup(stage, device)

    def score(self, samples: Sequence[RewardSample]) -> RewardOutput:
        outs = [term.score(samples) for term in self.terms]
        scores = [sum(w * out.scores[i] for w, out in zip(self.weights, outs))
                  for i in range(len(samples))]
        details = [{"terms": [{"type": sub.type, "weight": w, "score": out.scores[i],
                               "details": out.details[i]}
                              for sub, w, out in zip(self.configs, self.weights, outs)]}
                   for i in range(len(samples))]
        return RewardOutput(scores, details)

    def close(self) -> None:
        for term in self.terms:
            term.close()
