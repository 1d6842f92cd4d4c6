"""Registration of the ``lmforge_train`` plugin. Light: imports no torch, datasets or numpy."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, InputSlot, backend_ranks, hookimpl, stage
from lmforge_train.config import PretrainConfig, SFTConfig


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        stage(
            "train", "pretrain", config=PretrainConfig,
            factory="lmforge_train.pretrain:PretrainStage",
            description="Next-token pre-training on packed text blocks.",
            inputs={
                "dataset": InputSlot(("dataset/text",), help="documents (a 'text' column)"),
                "tokenizer": InputSlot(("tokenizer",)),
                "init": InputSlot(("model",), required=False,
                                  help="continue training this model"),
            },
            outputs={"model": "model"}, ranks=backend_ranks,
        ),
        stage(
            "train", "sft", config=SFTConfig,
            factory="lmforge_train.sft:SFTStage",
            description="Supervised fine-tuning on chats (loss on assistant tokens only).",
            inputs={
                "dataset": InputSlot(("dataset/chat",), help="conversations ('messages')"),
                "tokenizer": InputSlot(("tokenizer",)),
                "init": InputSlot(("model",), help="the pre-trained model to fine-tune"),
            },
            outputs={"model": "model"}, ranks=backend_ranks,
        ),
    ]
