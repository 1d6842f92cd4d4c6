"""The ``chat-loss`` evaluator: mean cross-entropy on assistant tokens of held-out conversations.

Each conversation is encoded with :func:`lmforge.chat.encode_chat`; the tokens that carry loss
(assistant contents and their ``<|end|>``) are scored, exactly as SFT trains them. Conversations
longer than ``max_seq_len + 1`` tokens are cut at the end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lmforge import Artifact
from lmforge.chat import encode_chat, validate_messages
from lmforge.evaluation import EvalContext, Evaluator, need_examples
from lmforge_eval.batching import example, loss_sum
from lmforge_eval.data import iter_rows


class ChatLoss(Evaluator):
    """Config: :class:`lmforge_eval.config.ChatLossConfig`."""

    def requires(self) -> dict[str, str]:
        return {"chat": "dataset/chat"}

    def run(self, model: Any, tokenizer: Any, inputs: Mapping[str, Artifact], device: Any,
            ctx: EvalContext) -> dict[str, Any]:
        art = inputs["chat"]
        examples = []
        skipped = 0
        for row, where in iter_rows(art.path, self.config.split, ["messages"], ctx.max_examples):
            messages = validate_messages(row["messages"], where)
            ids, mask = encode_chat(tokenizer.tokenizer, messages)
            ids, mask = ids[:model.max_seq_len + 1], mask[:model.max_seq_len + 1]
            if not any(mask[1:]):
                skipped += 1
                continue
            examples.append(example(ids, mask))
        need_examples(len(examples), "conversations with assistant tokens",
                      f"split {self.config.split!r} of {art.path}")
        total, count = loss_sum(model, examples, tokenizer.pad_id, device, ctx.batch_size)
        mean = total / count
        return {"loss": mean, "perplexity": math.exp(mean), "tokens": count,
                "conversations": len(examples), "skipped": skipped}
