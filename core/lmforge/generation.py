"""Batched generation, shared by every evaluator, rollout and AI-feedback stage.

``generate(module, prompts, params, pad_id=..., device=...)`` continues each prompt (a list of
token ids) ``params.n`` times and returns one :class:`Completion` per (prompt, sample): the new
token ids, the log-probability of each under the distribution it was sampled from, and why it
ended.

How it runs:

* prompts (each repeated ``n`` times) are grouped ``batch_size`` rows at a time and **left
  padded** with an attention mask, so every row's last prompt token sits in the last column;
  rotary positions count real tokens only, so padding changes nothing;
* with a model that has ``init_cache(batch, max_len)`` (the *incremental* protocol, see
  :class:`lmforge.interfaces.CausalLM`) the prompt is run once (prefill) and each step feeds one
  token per row through ``module(ids, attention_mask=..., cache=..., logits_to_keep=1)``; a model
  without it is run on the whole sequence at each step (correct, slower);
* the module is the one a backend returned (device, precision, sharding): every rank of a
  sharded model must call ``generate`` with the same prompts;
* sampling (on the device): ``temperature`` (0: greedy), ``top_k``, ``top_p``, with a generator
  seeded from ``params.seed`` and the batch's first row, so a run is reproducible for the same
  prompts, parameters and batch size;
* a row stops at the first of ``stop_ids`` (not included in ``token_ids``; ``finish_reason``
  ``"stop"``), after ``max_new_tokens`` (``"length"``), or when the context is full
  (the row holds ``max_len`` real tokens, by default the model's ``max_seq_len``:
  ``"length"``); prompts longer than ``max_len - 1`` keep their last tokens.

Imports torch: import it from code that runs a stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Completion", "SamplingParams", "generate", "sample_next"]


@dataclass(frozen=True)
class SamplingParams:
    """How to continue a prompt. ``temperature=0`` is greedy decoding; ``top_k=0`` and
    ``top_p=1`` keep every token; ``n`` completions per prompt."""

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    n: int = 1
    stop_ids: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError("max_new_tokens and n must be at least 1")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass
class Completion:
    """One continuation: ``token_ids`` (without the stop token), ``logprobs`` (one per token:
    its log-probability under the temperature-scaled distribution, before top-k / top-p),
    ``finish_reason`` (``"stop"`` or ``"length"``) and the ``stop_id`` that ended it."""

    prompt_index: int
    sample_index: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"
    stop_id: int | None = None


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens ``[B]`` from last-position logits ``[B, V]`` and their log-probabilities
    under ``softmax(logits / temperature)`` (greedy: the plain distribution)."""
    logits = logits.float()
    if params.temperature == 0:
        logp = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits / params.temperature, dim=-1)
    filtered = logp
    if 0 < params.top_k < logp.shape[-1]:
        kth = torch.topk(filtered, params.top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if params.top_p < 1:
        sorted_lp, order = torch.sort(filtered, dim=-1, descending=True)
        before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # mass of the tokens before
        drop_sorted = before >= params.top_p  # keeps the smallest set reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        filtered = filtered.masked_fill(drop, float("-inf"))
    probs = torch.softmax(filtered, dim=-1)
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _inner(module: Any) -> Any:
    """The model inside DDP / compile wrappers (for ``init_cache`` and ``max_seq_len``)."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if inner is None:
            return module
        module = inner


@torch.no_grad()
def generate(module: Any, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
             pad_id: int, device: Any, batch_size: int = 8, max_len: int | None = None,
             autocast: Any = None) -> list[Completion]:
    """Continue every prompt ``params.n`` times (see the module docstring); returns the
    completions ordered by (prompt, sample). ``autocast``: a context factory (e.g. a backend's
    ``autocast``) entered around every forward."""
    import contextlib

    model = _inner(module)
    limit = int(max_len or model.max_seq_len)
    if limit < 2:
        raise ValueError(f"max_len must be at least 2, got {limit}")
    rows = [(i, j) for i, _ in enumerate(prompts) for j in range(params.n)]
    out: list[Completion] = []
    ctx = autocast or contextlib.nullcontext
    was_training = module.training
    module.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            out += _generate_batch(module, model, [list(prompts[i])[-(limit - 1):]
                                                   for i, _ in batch],
                                   batch, params, pad_id, torch.device(device), limit, ctx,
                                   seed=params.seed * 1_000_003 + start)
    finally:
        module.train(was_training)
    return out


def _recompute(module: Any, ids: torch.Tensor, mask: torch.Tensor, alive: torch.Tensor,
               tokens: torch.Tensor, done: torch.Tensor, previous: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step without a cache: append ``tokens`` to the rows still generating, drop finished
    rows and the leading columns that are padding in every remaining row (so a row's context,
    not the batch's width, is what the model sees), and run the whole sequences again.
    Returns ``(logits [B, 1, V] for every row of the batch, ids, mask, alive)``."""
    ids = torch.cat([ids, tokens[alive][:, None]], dim=1)
    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    keep = ~done[alive]
    alive, ids, mask = alive[keep], ids[keep], mask[keep]
    first = int(mask.any(0).long().argmax())
    ids, mask = ids[:, first:], mask[:, first:]
    logits = torch.zeros_like(previous[:, -1:])
    logits[alive] = module(ids, attention_mask=mask, logits_to_keep=1).logits[:, -1:].to(
        logits.dtype)
    return logits, ids, mask, alive


def _generate_batch(module: Any, model: Any, prompts: list[list[int]],
                    rows: list[tuple[int, int]], params: SamplingParams, pad_id: int,
                    device: torch.device, limit: int, ctx: Any, seed: int) -> list[Completion]:
    b = len(prompts)
    width = max(len(p) for p in prompts)
    if width == 0:
        raise ValueError("a prompt must hold at least one token")
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[r, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    # Each row may grow to `limit` real tokens; padding columns cost no context.
    budget = torch.tensor([min(params.max_new_tokens, limit - len(p)) for p in prompts],
                          device=device)
    steps = int(budget.max())
    completions = [Completion(i, j) for i, j in rows]
    generator = torch.Generator(device=device).manual_seed(seed)
    stop = torch.tensor(sorted(set(params.stop_ids)) or [-1], device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    cache = None
    if callable(getattr(model, "init_cache", None)):
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(
            device.type) else None
        with ctx():
            cache = model.init_cache(b, width + steps, dtype=dtype)
            logits = module(ids, attention_mask=mask, cache=cache, logits_to_keep=1).logits
    else:
        with ctx():
            logits = module(ids, attention_mask=mask, logits_to_keep=1).logits
    alive = torch.arange(b, device=device)  # rows still generating (recomputation path)
    new_tokens, new_logps = [], []
    for _ in range(steps):
        tokens, logps = sample_next(logits[:, -1], params, generator)
        tokens = torch.where(done, torch.full_like(tokens, pad_id), tokens)
        new_tokens.append(tokens)
        new_logps.append(logps)
        done = done | torch.isin(tokens, stop) | (budget <= len(new_tokens))
        if bool(done.all()):
            break
        step_mask = (~done).long()[:, None]
        with ctx():
            if cache is not None:
                logits = module(tokens[:, None], attention_mask=step_mask, cache=cache,
                                logits_to_keep=1).logits
            else:
                logits, ids, mask, alive = _recompute(module, ids, mask, alive, tokens, done,
                                                      logits)
    if new_tokens:
        toks = torch.stack(new_tokens, 1).cpu().tolist()
        lps = torch.stack(new_logps, 1).float().cpu().tolist()
    else:
        toks, lps = [[] for _ in range(b)], [[] for _ in range(b)]
    stops = set(params.stop_ids)
    for c, row_t, row_lp, n in zip(completions, toks, lps, budget.tolist(), strict=True):
        for t, lp in zip(row_t[:n], row_lp[:n], strict=True):
            if t in stops:
                c.finish_reason, c.stop_id = "stop", t
                break
            c.token_ids.append(t)
            c.logprobs.append(lp)
    return completions
