"""The ``preference`` evaluator: log-probability of the chosen vs the rejected reply.

For each pair the prompt (messages) plus the reply as an assistant turn is encoded with
:func:`lmforge.chat.encode_chat`; the reply's tokens (its content and ``<|end|>``: the last
assistant span) are scored with :func:`lmforge.training.losses.sequence_logprobs`. Reported:

* ``accuracy`` — fraction of pairs with ``logp(chosen) > logp(rejected)`` (ties count as wrong);
* ``margin`` — mean of ``logp(chosen) - logp(rejected)`` (summed over reply tokens);
* ``norm_margin`` / ``norm_accuracy`` — the same with per-token mean log-probs (length-normalised).

Sequences longer than ``max_seq_len + 1`` tokens lose prompt tokens from the start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmforge import Artifact, StageInputError
from lmforge.chat import encode_chat, validate_messages
from lmforge.evaluation import EvalContext, Evaluator, need_examples
from lmforge_eval.batching import example, sequence_scores
from lmforge_eval.data import iter_rows


def last_span(mask: Sequence[bool]) -> list[bool]:
    """Only the last contiguous run of ``True`` in ``mask`` (the final assistant turn)."""
    out = [False] * len(mask)
    i = len(mask) - 1
    while i >= 0 and not mask[i]:
        i -= 1
    while i >= 0 and mask[i]:
        out[i] = True
        i -= 1
    return out


def reply_example(tokenizer: Any, prompt: list[dict[str, str]], reply: str, max_len: int
                  ) -> tuple[tuple[list[int], list[int]], int]:
    """The scored example of ``reply`` after ``prompt`` and its number of scored tokens."""
    ids, mask = encode_chat(tokenizer.tokenizer, [*prompt, {"role": "assistant", "content": reply}])
    scored = last_span(mask)
    ids, scored = ids[-(max_len + 1):], scored[-(max_len + 1):]
    ex = example(ids, scored)
    return ex, sum(1 for y in ex[1] if y != -100)


class Preference(Evaluator):
    """Config: :class:`lmforge_eval.config.PreferenceConfig`."""

    def requires(self) -> dict[str, str]:
        return {"preferences": "dataset/preference"}

    def run(self, model: Any, tokenizer: Any, inputs: Mapping[str, Artifact], device: Any,
            ctx: EvalContext) -> dict[str, Any]:
        art = inputs["preferences"]
        examples, lengths = [], []
        for row, where in iter_rows(art.path, self.config.split, ["prompt", "chosen", "rejected"],
                                    ctx.max_examples):
            prompt = validate_messages(row["prompt"], where, need_assistant=False)
            for col in ("chosen", "rejected"):
                if not isinstance(row[col], str) or not row[col]:
                    raise StageInputError(f"{where}: {col!r} must be a non-empty string")
                ex, n = reply_example(tokenizer, prompt, row[col], model.max_seq_len)
                examples.append(ex)
                lengths.append(n)
        need_examples(len(examples), "preference pairs", f"split {self.config.split!r} of {art.path}")
        scores = sequence_scores(model, examples, tokenizer.pad_id, device, ctx.batch_size)
        chosen, rejected = scores[0::2], scores[1::2]
        n_c, n_r = lengths[0::2], lengths[1::2]
        pairs = len(chosen)
        norm_c = [s / n for s, n in zip(chosen, n_c)]
        norm_r = [s / n for s, n in zip(rejected, n_r)]
        return {
            "accuracy": sum(c > r for c, r in zip(chosen, rejected)) / pairs,
            "margin": sum(c - r for c, r in zip(chosen, rejected)) / pairs,
            "norm_accuracy": sum(c > r for c, r in zip(norm_c, norm_r)) / pairs,
            "norm_margin": sum(c - r for c, r in zip(norm_c, norm_r)) / pairs,
            "chosen_logprob": sum(chosen) / pairs, "rejected_logprob": sum(rejected) / pairs,
            "pairs": pairs,
        }
