"""The ``generate`` evaluator: greedy and sampled completions for prompts, into the report.

Generation is a plain loop over the model's forward (no KV cache): at each step the last
``max_seq_len`` tokens are run through ``model(ids, logits_to_keep=1)`` (only the last
position's logits are computed); the next token is the argmax (greedy) or drawn from
``softmax(logits / temperature)`` restricted to the ``top_k`` most likely tokens, with a CPU
``torch.Generator`` seeded per prompt (``seed + i``) so results do not depend on the device.
Generation stops after ``<|end|>`` or EOS (not included in the text) or ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from lmforge import Artifact
from lmforge.chat import END, encode_chat, validate_messages
from lmforge.evaluation import EvalContext, Evaluator, need_examples
from lmforge_eval.data import iter_rows


def next_token_logits(model: Any, ids: Sequence[int], device: Any) -> torch.Tensor:
    """Logits ``[vocab]`` (float32, CPU) for the token after ``ids`` (last max_seq_len used)."""
    x = torch.tensor([list(ids[-model.max_seq_len:])], dtype=torch.long, device=device)
    return model(x, logits_to_keep=1).logits[0, -1].float().cpu()


def generate(model: Any, prompt: Sequence[int], *, max_new_tokens: int, stop_ids: Collection[int],
             device: Any, temperature: float | None = None, top_k: int = 0,
             generator: torch.Generator | None = None) -> tuple[list[int], bool]:
    """New token ids after ``prompt`` (without the stop token) and whether a stop token ended
    them. ``temperature=None`` is greedy decoding."""
    ids = list(prompt)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = next_token_logits(model, ids, device)
        if temperature is None:
            tok = int(torch.argmax(logits))
        else:
            logits = logits / temperature
            if 0 < top_k < logits.shape[0]:
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            tok = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
        if tok in stop_ids:
            return new, True
        new.append(tok)
        ids.append(tok)
    return new, False


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
        cfg = self.config
        stop = {tokenizer.eos_id, tokenizer.tokenizer.token_to_id(END)}
        rows = []
        prompts = self.prompts(inputs)
        with ctx.progress(len(prompts) * len(cfg.modes), "generating", unit="prompt") as bar:
            for i, p in enumerate(prompts):
                if "messages" in p:
                    ids, _ = encode_chat(tokenizer.tokenizer, p["messages"],
                                         add_generation_prompt=True)
                    shown = "\n".join(f"{m['role']}: {m['content']}" for m in p["messages"])
                else:
                    ids, shown = tokenizer.encode(p["text"]), p["text"]
                for mode in cfg.modes:
                    gen = torch.Generator().manual_seed(cfg.seed + i)
                    new, stopped = generate(
                        model, ids, max_new_tokens=cfg.max_new_tokens, stop_ids=stop,
                        device=device, temperature=None if mode == "greedy" else cfg.temperature,
                        top_k=cfg.top_k, generator=gen)
                    rows.append({"prompt": shown, "mode": mode, "completion": tokenizer.decode(new),
                                 "tokens": len(new), "stopped": stopped,
                                 "reference": p["reference"]})
                    bar.advance()
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
