"""The ``judge`` reward: a judge's opinion as the reward of PPO / GRPO / RLOO (d-RLAIF).

* ``mode: score`` — ``reward = scale * judge.score(prompt, completion) + offset`` (for
  ``model-prompted``: the expected 1-9 rating read from the judge's digit probabilities, the
  RLAIF paper's direct-RLAIF);
* ``mode: reference`` — ``p = P(completion beats the sample's reference)`` from
  ``judge.compare`` (both orders, averaged), ``reward = scale * (2p - 1) + offset``; a sample
  without a reference is an error naming it.

``details`` per sample keep the judge's name, its raw numbers and the principle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmforge import Artifact, StageInputError
from lmforge.judging import Comparison
from lmforge.rewards import Reward, RewardOutput, RewardSample


def own_judges() -> dict[str, Any]:
    """This plugin's judge classes by component name."""
    from lmforge_feedback.http_judge import OpenAICompatibleJudge
    from lmforge_feedback.judges import ModelLikelihoodJudge, ModelPromptedJudge, RewardJudge

    return {"model-prompted": ModelPromptedJudge, "model-likelihood": ModelLikelihoodJudge,
            "openai-compatible": OpenAICompatibleJudge, "reward": RewardJudge}


class JudgeReward(Reward):
    """Config: :class:`lmforge_feedback.config.JudgeRewardConfig`."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.judge: Any = None

    def _judge(self) -> Any:
        if self.judge is None:  # the config admits only this plugin's model and HTTP judges
            self.judge = own_judges()[self.config.judge.type](self.config.judge)
        return self.judge

    def requires(self) -> dict[str, str]:
        return self._judge().requires()

    def check(self, inputs: Mapping[str, Artifact]) -> None:
        self._judge().check(inputs)

    def setup(self, stage: Any, device: Any) -> None:
        self._judge().setup(stage, device)

    def score(self, samples: Sequence[RewardSample]) -> RewardOutput:
        judge = self.judge
        if judge is None:
            raise RuntimeError("reward 'judge': call setup(stage, device) first")
        cfg = self.config
        if cfg.mode == "score":
            values = judge.score([(s.prompt, s.completion) for s in samples])
            return RewardOutput(scores=[cfg.scale * v + cfg.offset for v in values],
                                details=[{"judge": judge.name, "judge_score": v}
                                         for v in values])
        missing = [i for i, s in enumerate(samples) if not s.reference]
        if missing:
            raise StageInputError(f"reward 'judge' (mode reference): sample(s) {missing[:5]} "
                                  f"have no reference response to compare with; give the "
                                  f"prompts a 'reference' column or use mode: score")
        verdicts = judge.compare([Comparison(prompt=s.prompt, a=s.completion,
                                             b=str(s.reference), principle=cfg.principle)
                                  for s in samples])
        return RewardOutput(
            scores=[cfg.scale * (2 * v.p_a - 1) + cfg.offset for v in verdicts],
            details=[{"judge": v.judge, "p_beats_reference": v.p_a, "raw": v.raw,
                      "principle": v.principle, "consistent": v.consistent}
                     for v in verdicts])

    def close(self) -> None:
        if self.judge is not None:
            self.judge.close()
