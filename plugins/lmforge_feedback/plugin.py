"""Registration of the ``lmforge_feedback`` plugin: judges, the ``judge`` reward, the
Constitutional AI and RLAIF data stages and the ``safety`` evaluator. Light: pydantic, PyYAML
and lmforge only."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, InputSlot, hookimpl, stage
from lmforge_feedback.config import (
    AIPreferencesConfig,
    ConstitutionalConfig,
    JudgeRewardConfig,
    ModelLikelihoodJudgeConfig,
    ModelPromptedJudgeConfig,
    OpenAICompatibleJudgeConfig,
    RewardJudgeConfig,
    SafetyConfig,
)

PROMPTS = ("dataset/prompt", "dataset/chat", "dataset/preference")

JUDGE_INPUTS = {
    "judge": InputSlot(("model",), required=False,
                       help="The judge model (for judges with model_input: judge, the default)."),
    "judge_tokenizer": InputSlot(("tokenizer",), required=False,
                                 help="The judge model's tokenizer (default: the 'tokenizer' "
                                      "input)."),
}


def _judge(name: str, config: type, factory: str, description: str) -> Component:
    return Component(kind="judge", name=name, config=config,
                     factory=f"lmforge_feedback.{factory}", description=description)


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        _judge("model-prompted", ModelPromptedJudgeConfig, "judges:ModelPromptedJudge",
               "A language model asked which response is better; option-token "
               "probabilities, both orders averaged"),
        _judge("model-likelihood", ModelLikelihoodJudgeConfig, "judges:ModelLikelihoodJudge",
               "A language model's log-probability of each response; sigmoid of the "
               "difference"),
        _judge("openai-compatible", OpenAICompatibleJudgeConfig,
               "http_judge:OpenAICompatibleJudge",
               "A chat-completions HTTP endpoint (vLLM, llama.cpp, lmforge serve); retries, "
               "disk cache"),
        _judge("reward", RewardJudgeConfig, "judges:RewardJudge",
               "Any reward component: sigmoid of the reward difference"),
        Component(kind="reward", name="judge", config=JudgeRewardConfig,
                  factory="lmforge_feedback.judge_reward:JudgeReward",
                  description="A judge's score, or its comparison with a reference response, "
                              "as the reward (d-RLAIF)"),
        Component(kind="evaluator", name="safety", config=SafetyConfig,
                  factory="lmforge_feedback.safety:Safety",
                  description="Harmful compliance on red-team prompts and over-refusal on "
                              "benign look-alikes, by rules or a judge"),
        stage("data", "constitutional", config=ConstitutionalConfig,
              factory="lmforge_feedback.constitutional:ConstitutionalStage",
              description="Constitutional AI data: SL-CAI revisions or RL-CAI judge-labelled "
                          "preference pairs",
              inputs={
                  "model": InputSlot(("model",), help="The policy that answers, critiques and "
                                     "revises (SL) or samples the pairs (RL)."),
                  "tokenizer": InputSlot(("tokenizer",)),
                  "prompts": InputSlot(PROMPTS, help="Prompts: dataset/prompt, or the "
                                       "messages before the first assistant turn of a "
                                       "dataset/chat, or the prompts of a dataset/preference."),
                  **JUDGE_INPUTS,
              },
              outputs=_constitutional_outputs),
        stage("data", "ai-preferences", config=AIPreferencesConfig,
              factory="lmforge_feedback.ai_preferences:AIPreferencesStage",
              description="RLAIF: preference pairs labelled by a judge, with gold agreement "
                          "and position consistency",
              inputs={
                  "pairs": InputSlot(("dataset/preference",), required=False,
                                     help="Pairs to label (chosen = the gold label)."),
                  "model": InputSlot(("model",), required=False,
                                     help="Policy sampling two responses per prompt."),
                  "tokenizer": InputSlot(("tokenizer",), required=False,
                                         help="The policy's (and by default the judge's) "
                                              "tokenizer."),
                  "prompts": InputSlot(PROMPTS, required=False,
                                       help="Prompts to sample pairs for."),
                  **JUDGE_INPUTS,
              },
              outputs={"preferences": "dataset/preference"}),
    ]


def _constitutional_outputs(config: ConstitutionalConfig) -> dict[str, str]:
    """rl: ``preferences``; sl: ``chat``, and ``preferences`` when asked for."""
    if config.mode == "rl":
        return {"preferences": "dataset/preference"}
    out = {"chat": "dataset/chat"}
    if config.preferences:
        out["preferences"] = "dataset/preference"
    return out
