"""An ``lm_eval.api.model.LM`` on an lmforge model: the harness's three request types.

* ``loglikelihood(context, continuation)``: the pair is tokenized as the harness's ``hf`` model
  does (trailing spaces of the context move to the continuation; the whole string is encoded
  and the context's tokens split off; an empty context becomes the prefix token), rows are
  left padded and scored in one forward each batch through the model-call contract
  (``module(ids, attention_mask=..., logits_to_keep=K)``), returning the continuation's summed
  log-prob and whether every continuation token is the argmax;
* ``loglikelihood_rolling(text)``: the harness's disjoint rolling windows of ``max_length``
  tokens (prefix token first), each scored with ``module(..., labels=...,
  return_logprobs=True)``; the sum over windows;
* ``generate_until(context, gen_kwargs)``: :func:`lmforge.generation.generate` (greedy unless
  ``do_sample``/``temperature`` ask otherwise), stopping at EOS / ``<|end|>`` or the ``until``
  strings (not included in the answer).

Imports torch and lm_eval: imported only when the evaluator runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import LM

from lmforge.chat import END


class LmforgeLM(LM):
    """``model``: a :class:`lmforge.interfaces.CausalLM` on ``device`` in eval mode;
    ``tokenizer``: a :class:`lmforge.chat.TokenizerArtifact`."""

    def __init__(self, model: Any, tokenizer: Any, device: Any, batch_size: int = 8,
                 max_gen_toks: int = 256, seed: int = 1234) -> None:
        super().__init__()
        self.model, self.tok, self._device = model, tokenizer, torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.max_length = int(model.max_seq_len)
        self.max_gen_toks, self.seed = int(max_gen_toks), int(seed)
        self.prefix_token_id = int(tokenizer.eos_id)
        end = tokenizer.tokenizer.token_to_id(END)
        self.stop_ids = tuple(t for t in (tokenizer.eos_id, end) if t is not None)

    @property
    def device(self) -> torch.device:
        return self._device

    # -- tokenization as the harness's hf model does it ---------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            return [self.prefix_token_id], self.tok.encode(continuation)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok.encode(context + continuation)
        n_context = len(self.tok.encode(context))
        return whole[:n_context], whole[n_context:]

    # -- requests -------------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False
                      ) -> list[tuple[float, bool]]:
        pairs = [self.encode_pair(*req.args) for req in requests]
        return self.score_pairs(pairs)

    def score_pairs(self, pairs: Sequence[tuple[list[int], list[int]]]
                    ) -> list[tuple[float, bool]]:
        """``(sum of log p(continuation | context), continuation is greedy)`` per pair; the
        input keeps its last ``max_length`` tokens (the harness's truncation)."""
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: -sum(map(len, pairs[i])))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            rows, conts = [], []
            for i in chunk:
                context, cont = pairs[i]
                if not cont:
                    raise ValueError(f"request {i}: the continuation has no tokens")
                whole = (context + cont)[-(self.max_length + 1):]
                rows.append(whole[:-1])  # position t predicts whole[t + 1]
                conts.append(cont[-len(whole) + 1:] if len(cont) >= len(whole) else cont)
            width = max(len(r) for r in rows)
            keep = max(len(c) for c in conts)
            ids = torch.full((len(rows), width), self.tok.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, row in enumerate(rows):
                ids[r, width - len(row):] = torch.tensor(row)
                mask[r, width - len(row):] = 1
            logits = self.model(ids.to(self.device), attention_mask=mask.to(self.device),
                                logits_to_keep=keep).logits.float()
            logp = F.log_softmax(logits, dim=-1)  # [B, keep, V]: the last `keep` positions
            for r, i in enumerate(chunk):
                cont = conts[r]
                lp = logp[r, keep - len(cont):]
                target = torch.tensor(cont, device=lp.device)
                total = float(lp.gather(-1, target[:, None]).sum())
                greedy = bool((lp.argmax(-1) == target).all())
                out[i] = (total, greedy)
        return out  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False
                              ) -> list[float]:
        results = []
        for req in requests:
            (text,) = req.args
            windows = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
                token_list=self.tok.encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            results.append(sum(self.score_windows(windows)))
        return results

    def score_windows(self, windows: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Summed log-prob of each window's continuation given its context, right padded,
        through ``return_logprobs`` (no logits kept)."""
        sums = []
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start:start + self.batch_size]
            seqs = [(ctx + cont)[-(self.max_length + 1):] for ctx, cont in chunk]
            width = max(len(s) - 1 for s in seqs)
            ids = torch.full((len(seqs), width), self.tok.pad_id, dtype=torch.long)
            labels = torch.full_like(ids, -100)
            mask = torch.zeros_like(ids)
            for r, (s, (_, cont)) in enumerate(zip(seqs, chunk, strict=True)):
                n = len(s) - 1
                ids[r, :n] = torch.tensor(s[:-1])
                mask[r, :n] = 1
                scored = min(len(cont), n)
                labels[r, n - scored:n] = torch.tensor(s[-scored:])
            out = self.model(ids.to(self.device), attention_mask=mask.to(self.device),
                             labels=labels.to(self.device), return_logprobs=True)
            sums += out.token_logprobs.double().sum(-1).tolist()
        return sums

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        from lmforge.generation import SamplingParams, generate

        results: list[str | None] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, req in enumerate(requests):
            kwargs = dict(req.args[1] or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            sample = bool(kwargs.pop("do_sample", False))
            temperature = float(kwargs.pop("temperature", 1.0 if sample else 0.0))
            if not sample:
                temperature = 0.0
            top_p = float(kwargs.pop("top_p", 1.0) or 1.0)
            groups.setdefault((tuple(until), max_new, temperature, top_p), []).append(i)
        for (until, max_new, temperature, top_p), idx in groups.items():
            budget = max(1, self.max_length - max_new)
            prompts = [(self.tok.encode(requests[i].args[0]) or [self.prefix_token_id])[-budget:]
                       for i in idx]
            tok = self.tok

            def stop_check(row: int, ids: list[int], _until: tuple[str, ...] = until) -> bool:
                return bool(_until) and any(u in tok.decode(ids) for u in _until)

            params = SamplingParams(max_new_tokens=max_new, temperature=temperature,
                                    top_p=top_p, stop_ids=self.stop_ids, seed=self.seed)
            done = generate(self.model, prompts, params, pad_id=self.tok.pad_id,
                            device=self.device, batch_size=self.batch_size,
                            stop_check=stop_check if until else None)
            for i, c in zip(idx, done, strict=True):
                text = self.tok.decode(c.token_ids)
                for u in until:
                    text = text.split(u, 1)[0]
                results[i] = text
        return results  # type: ignore[return-value]
