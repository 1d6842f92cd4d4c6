"""Registration of the ``lmforge_align`` plugin. Light: imports no torch, datasets or numpy."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, InputSlot, backend_ranks, hookimpl, stage
from lmforge_align.config import DPOConfig


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
    ]
