"""Registration of the ``lmforge_align`` plugin. Light: imports no torch, datasets or numpy."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, InputSlot, backend_ranks, hookimpl, stage
from lmforge_align.config import DPOConfig, RewardModelConfig
from lmforge_align.rl_config import GRPOConfig, PPOConfig, RLOOConfig

_RL_INPUTS = {
    "dataset": InputSlot(("dataset/prompt", "dataset/chat"),
                         help="prompts: a dataset/prompt, or chats whose last assistant turn "
                              "is dropped; its 'heldout' split is evaluated"),
    "tokenizer": InputSlot(("tokenizer",)),
    "init": InputSlot(("model",), help="the SFT model: the policy starts from it and it is the "
                      "frozen reference"),
    "reward_model": InputSlot(("model",), required=False,
                              help="the reward model, for a reward that needs one "
                                   "(reward-model)"),
}


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        stage(
            "align", "dpo", config=DPOConfig,
            factory="lmforge_align.dpo:DPOStage",
            description="Direct preference optimisation (sigmoid / IPO / hinge) of an SFT model.",
            inputs={
                "dataset": InputSlot(("dataset/preference",),
                                     help="pairs: prompt (messages), chosen, rejected"),
                "tokenizer": InputSlot(("tokenizer",)),
                "init": InputSlot(("model",), help="the SFT model: the policy starts from it "
                                  "and it is the frozen reference"),
            },
            outputs={"model": "model"}, ranks=backend_ranks,
        ),
        stage(
            "train", "reward-model", config=RewardModelConfig,
            factory="lmforge_align.reward_model:RewardModelStage",
            description="A Bradley-Terry reward model: the init model with a score head, "
                        "trained on preference pairs; reports held-out pair accuracy.",
            inputs={
                "dataset": InputSlot(("dataset/preference",),
                                     help="pairs: prompt (messages), chosen, rejected; its "
                                          "'heldout' split is scored before and after"),
                "tokenizer": InputSlot(("tokenizer",)),
                "init": InputSlot(("model",), help="the SFT model: the reward model's body "
                                  "(its LM head is replaced by a fresh score head)"),
            },
            outputs={"model": "model"}, ranks=backend_ranks,
        ),
        stage(
            "align", "ppo", config=PPOConfig,
            factory="lmforge_align.ppo:PPOStage",
            description="PPO against a reward with a KL penalty to the SFT model, a value "
                        "model and GAE.",
            inputs={**_RL_INPUTS, "value_init": InputSlot(
                ("model",), required=False, help="initial value model (a score-head model, "
                "usually the reward model); default: the init model with a fresh score head")},
            outputs={"model": "model"}, ranks=backend_ranks,
        ),
        stage(
            "align", "grpo", config=GRPOConfig,
            factory="lmforge_align.grpo:GRPOStage",
            description="GRPO: group-normalised advantages over several samples per prompt, "
                        "clipped objective, optional KL to the reference.",
            inputs=dict(_RL_INPUTS), outputs={"model": "model"}, ranks=backend_ranks,
        ),
        stage(
            "align", "rloo", config=RLOOConfig,
            factory="lmforge_align.grpo:RLOOStage",
            description="RLOO: REINFORCE with a leave-one-out baseline over several samples "
                        "per prompt.",
            inputs=dict(_RL_INPUTS), outputs={"model": "model"}, ranks=backend_ranks,
        ),
    ]
