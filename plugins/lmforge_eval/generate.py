"""The ``generate`` evaluator: greedy and sampled completions for prompts, into the report.

Completions come from :func:`lmforge.generation.generate` (batched, left-padded, KV cache when
the model has one): greedy, or sampled with ``temperature`` and ``top_k`` and a generator seeded
from ``seed``. Generation stops after ``<|end|>`` or EOS (not included in the text),
``max_new_tokens``, or when the model's context (``max_seq_len``) is full.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmforge import Artifact
from lmforge.chat import END, encode_chat, validate_messages
from lmforge.evaluation import EvalContext, Evaluator, need_examples
from lmforge_eval.data import iter_rows


class Generate(Evaluator):
    """Config: :class:`lmforge_eval.config.GenerateConfig`."""

    def requires(self) -> dict[str, str]:
        return {} if self.config.prompts else {"chat": "dataset/chat"}

    def prompts(self, inputs: Mapping[str, Artifact]) -> list[dict[str, Any]]:
        """``[{"messages" | "text": ..., "reference": str | None}]``."""
        cfg = self.config
        if cfg.prompts:
            key = "messages" if cfg.chat_format else "text"
            return [{key: [{"role": "user", "content": p}] if cfg.chat_format else p,
                     "reference": None} for p in cfg.prompts]
        out = []
        art = inputs["chat"]
        for row, where in iter_rows(art.path, cfg.split, ["messages"]):
            messages = validate_messages(row["messages"], where)
            first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
            if first == 0:
                continue
            out.append({"messages": messages[:first], "reference": messages[first]["content"]})
            if len(out) >= cfg.num_prompts:
                break
        need_examples(len(out), "conversations with a prompt before the first assistant turn",
                      f"split {cfg.split!r} of {art.path}")
        return out

    def run(self, model: Any, tokenizer: Any, inputs: Mapping[str, Artifact], device: Any,
            ctx: EvalContext) -> dict[str, Any]:
        from lmforge.generation import SamplingParams, generate

        cfg = self.config
        stop = tuple(t for t in (tokenizer.eos_id, tokenizer.tokenizer.token_to_id(END))
                     if t is not None)
        prompts = self.prompts(inputs)
        encoded, shown = [], []
        for p in prompts:
            if "messages" in p:
                ids, _ = encode_chat(tokenizer.tokenizer, p["messages"], add_generation_prompt=True)
                encoded.append(ids)
                shown.append("\n".join(f"{m['role']}: {m['content']}" for m in p["messages"]))
            else:
                encoded.append(tokenizer.encode(p["text"]))
                shown.append(p["text"])
        by_mode = {}
        with ctx.progress(len(cfg.modes), "generating", unit="mode") as bar:
            for mode in cfg.modes:
                params = SamplingParams(
                    max_new_tokens=cfg.max_new_tokens, stop_ids=stop, seed=cfg.seed,
                    temperature=0.0 if mode == "greedy" else cfg.temperature, top_k=cfg.top_k)
                by_mode[mode] = generate(model, encoded, params, pad_id=tokenizer.pad_id,
                                         device=device, batch_size=ctx.batch_size)
                bar.advance()
        rows = []
        for i, p in enumerate(prompts):
            for mode in cfg.modes:
                c = by_mode[mode][i]
                rows.append({"prompt": shown[i], "mode": mode,
                             "completion": tokenizer.decode(c.token_ids),
                             "tokens": len(c.token_ids), "stopped": c.finish_reason == "stop",
                             "reference": p["reference"]})
        return {"mean_new_tokens": sum(r["tokens"] for r in rows) / len(rows),
                "stop_rate": sum(r["stopped"] for r in rows) / len(rows),
                "samples": len(rows), "generations": rows}

    def markdown(self, result: Mapping[str, Any]) -> str:
        parts = []
        for r in result.get("generations", []):
            parts.append(f"**{r['mode']}** ({r['tokens']} tokens, "
                         f"{'stopped' if r['stopped'] else 'hit max_new_tokens'})\n\n"
                         f"{_quote('prompt', r['prompt'])}{_quote('completion', r['completion'])}"
                         + (_quote('reference', r['reference']) if r['reference'] else ""))
        return "\n".join(parts)


def _quote(title: str, text: str) -> str:
    body = text.replace("```", "ʼʼʼ")
    return f"*{title}:*\n\n```text\n{body}\n```\n\n"
