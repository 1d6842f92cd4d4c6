"""Batched generation, shared by every evaluator, rollout, AI-feedback stage and the server.

``generate(module, prompts, params, pad_id=..., device=...)`` continues each prompt (a list of
token ids) ``params.n`` times and returns one :class:`Completion` per (prompt, sample): the new
token ids, the log-probability of each under the distribution it was sampled from, and why it
ended.

How it runs:

* the (prompt, sample) rows are ordered by prompt length (longest first, so rows of similar
  length share a batch and little is padding), taken ``batch_size`` at a time and **left
  padded** with an attention mask, so every row's last prompt token sits in the last column;
  rotary positions count real tokens only, so padding changes nothing. Completions come back
  in (prompt, sample) order whatever the batching;
* with a model that has ``init_cache(batch, max_len)`` (the *incremental* protocol, see
  :class:`lmforge.interfaces.CausalLM` and ``docs/plugins/generation.md``) the prompt is run
  once (prefill) into a cache allocated once for the whole batch, and each step feeds one
  token per row through ``module(ids, attention_mask=..., cache=..., logits_to_keep=1)``. When
  at least half of a batch has finished and the cache offers ``select(rows)``, the finished
  rows are dropped from it (a rollout whose lengths vary pays for the rows still running). A
  model without the protocol is run on the whole sequence at each step (correct, slower);
* the module is the one a backend returned (device, precision, sharding): every rank of a
  sharded model must call ``generate`` with the same prompts and parameters (each makes the
  same forward calls);
* sampling (on the device): ``temperature`` (0: greedy), ``top_k``, ``top_p``, with a generator
  seeded from ``params.seed`` and the batch's position, so a run is reproducible for the same
  prompts, parameters and batch size;
* a row stops at the first of ``stop_ids`` (not included in ``token_ids``; ``finish_reason``
  ``"stop"``), when ``stop_check`` says so (``"stop"``, e.g. a stop *string* found in the
  decoded text), after ``max_new_tokens`` (``"length"``), or when the context is full (the row
  holds ``max_len`` real tokens, by default the model's ``max_seq_len``: ``"length"``); prompts
  longer than ``max_len - 1`` keep their last tokens;
* per step the host is asked nothing on CPU; on an accelerator whether every row has finished
  is read back every ``sync_every`` steps only (the extra steps of finished rows are dropped).

Imports torch: import it from code that runs a stage.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Completion", "SamplingParams", "StopCheck", "generate", "sample_next"]

#: ``stop_check(row, token_ids) -> bool``: ``row`` is the completion's index in the returned
#: list, ``token_ids`` its new tokens so far (possibly a few past the point where it should
#: have stopped: the caller trims). True ends the row with ``finish_reason="stop"``.
StopCheck = Callable[[int, list[int]], bool]


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
    #: also return, per new token, the ``top_logprobs`` most probable tokens and their
    #: log-probabilities (under the same distribution as ``logprobs``)
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError("max_new_tokens and n must be at least 1")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0, got {self.top_logprobs}")


@dataclass
class Completion:
    """One continuation: ``token_ids`` (without the stop token), ``logprobs`` (one per token:
    its log-probability under the temperature-scaled distribution, before top-k / top-p),
    ``finish_reason`` (``"stop"`` or ``"length"``) and the ``stop_id`` that ended it (None
    when it ran to its length, or a ``stop_check`` ended it). ``top_logprobs``: per token, the
    ``params.top_logprobs`` most probable ``(token id, log-prob)`` pairs, best first (empty when
    not asked for)."""

    prompt_index: int
    sample_index: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"
    stop_id: int | None = None
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens ``[B]`` from last-position logits ``[B, V]`` and their log-probabilities
    under ``softmax(logits / temperature)`` (greedy: the plain distribution)."""
    tokens, logp = _sample(logits, params, generator)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _sample(logits: torch.Tensor, params: SamplingParams,
            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [B], log-probabilities [B, V])`` (see :func:`sample_next`)."""
    logits = logits.float()
    if params.temperature == 0:
        return logits.argmax(dim=-1), torch.log_softmax(logits, dim=-1)
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
    return tokens, logp


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
             autocast: Any = None, stop_check: StopCheck | None = None,
             check_every: int = 8, sync_every: int = 8) -> list[Completion]:
    """Continue every prompt ``params.n`` times (see the module docstring); returns the
    completions ordered by (prompt, sample).

    ``autocast``: a context factory (e.g. a backend's ``autocast``) entered around every
    forward. ``stop_check``: see :data:`StopCheck`; called for the rows still running every
    ``check_every`` steps and at the end (it costs a copy of the new tokens to the host).
    ``sync_every``: on an accelerator, steps between reads of "has every row finished?"."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if check_every < 1 or sync_every < 1:
        raise ValueError("check_every and sync_every must be at least 1")
    model = _inner(module)
    limit = int(max_len or model.max_seq_len)
    if limit < 2:
        raise ValueError(f"max_len must be at least 2, got {limit}")
    kept = [list(p)[-(limit - 1):] for p in prompts]
    for i, p in enumerate(kept):
        if not p:
            raise ValueError(f"prompt {i} is empty: a prompt must hold at least one token")
    rows = [(i, j) for i, _ in enumerate(kept) for j in range(params.n)]
    # Longest first: similar lengths share a batch; `sorted` is stable, so samples of one
    # prompt stay together and in order.
    order = sorted(range(len(rows)), key=lambda r: -len(kept[rows[r][0]]))
    out: list[Completion | None] = [None] * len(rows)
    ctx = autocast or contextlib.nullcontext
    dev = torch.device(device)
    was_training = module.training
    module.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            check = None
            if stop_check is not None:
                def check(r: int, ids: list[int], _chunk: list[int] = chunk) -> bool:
                    return stop_check(_chunk[r], ids)
            done = _generate_batch(module, model, [kept[rows[r][0]] for r in chunk],
                                   [rows[r] for r in chunk], params, pad_id, dev, limit, ctx,
                                   seed=params.seed * 1_000_003 + start, stop_check=check,
                                   check_every=check_every, sync_every=sync_every)
            for r, c in zip(chunk, done, strict=True):
                out[r] = c
    finally:
        module.train(was_training)
    return out  # type: ignore[return-value]


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


class _Rows:
    """The rows of a batch that the cache still holds: ``index`` ``[b']`` (positions in the
    batch), and the per-row state the loop carries, kept aligned with the cache."""

    def __init__(self, b: int, device: torch.device) -> None:
        self.index = torch.arange(b, device=device)
        self.all = True  # index is arange(b): no gather needed

    def take(self, keep: torch.Tensor) -> None:
        self.index = self.index[keep]
        self.all = False


def _generate_batch(module: Any, model: Any, prompts: list[list[int]],
                    rows: list[tuple[int, int]], params: SamplingParams, pad_id: int,
                    device: torch.device, limit: int, ctx: Any, seed: int,
                    stop_check: StopCheck | None, check_every: int, sync_every: int
                    ) -> list[Completion]:
    b = len(prompts)
    width = max(len(p) for p in prompts)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[r, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    # Each row may grow to `limit` real tokens; padding columns cost no context.
    budgets = [min(params.max_new_tokens, limit - len(p)) for p in prompts]
    steps = max(budgets)
    budget = torch.tensor(budgets, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    stop = torch.tensor(sorted(set(params.stop_ids)), device=device, dtype=torch.long)
    done = torch.zeros(b, dtype=torch.bool, device=device)  # per row of the batch
    sync_every = 1 if device.type == "cpu" else sync_every  # a read-back is free on CPU
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
    can_select = cache is not None and callable(getattr(cache, "select", None))
    live = _Rows(b, device)  # rows the cache holds (cache path)
    alive = torch.arange(b, device=device)  # rows still generating (recomputation path)
    # Written per step at column `n`; rows that finished keep `pad_id` and are cut on the host.
    tokens_out = torch.full((b, steps), pad_id, dtype=torch.long, device=device)
    logps_out = torch.zeros((b, steps), dtype=torch.float32, device=device)
    k_top = min(params.top_logprobs, int(logits.shape[-1]))
    if k_top:
        top_lp = torch.zeros((b, steps, k_top), dtype=torch.float32, device=device)
        top_id = torch.zeros((b, steps, k_top), dtype=torch.long, device=device)
    checked_at: list[int | None] = [None] * b  # steps a row had when stop_check ended it
    n = 0
    while n < steps:
        tokens, full = _sample(logits[:, -1], params, generator)
        logps = full.gather(-1, tokens[:, None]).squeeze(-1)
        at = slice(None) if live.all else live.index
        tokens = tokens.masked_fill(done[at], pad_id)
        tokens_out[at, n] = tokens
        logps_out[at, n] = logps
        if k_top:
            values, indices = full.topk(k_top, dim=-1)
            top_lp[at, n] = values
            top_id[at, n] = indices
        n += 1
        new_done = budget <= n
        if stop.numel():
            hit = torch.zeros_like(done)
            hit[live.index] = torch.isin(tokens, stop)
            new_done |= hit
        done |= new_done
        if stop_check is not None and n % check_every == 0:
            _run_stop_check(stop_check, tokens_out[:, :n], done, checked_at)
        if n >= steps or (n % sync_every == 0 and bool(done.all())):
            break
        if cache is not None:
            finished = done[live.index]
            if can_select and n % sync_every == 0:
                n_done = int(finished.sum())
                if 2 * n_done >= len(live.index) and n_done:
                    keep = (~finished).nonzero().squeeze(-1)
                    cache.select(keep)
                    live.take(keep)
                    tokens, finished = tokens[keep], finished[keep]
            with ctx():
                logits = module(tokens[:, None], attention_mask=(~finished)[:, None],
                                cache=cache, logits_to_keep=1).logits
        else:
            with ctx():
                logits, ids, mask, alive = _recompute(module, ids, mask, alive, tokens, done,
                                                      logits)
    toks = tokens_out[:, :n].cpu().tolist()
    lps = logps_out[:, :n].cpu().tolist()
    tops = (list(zip(top_id[:, :n].cpu().tolist(), top_lp[:, :n].cpu().tolist(), strict=True))
            if k_top else None)
    stops = set(params.stop_ids)
    completions = [Completion(i, j) for i, j in rows]
    for r, (c, row_t, row_lp, budget_r, at) in enumerate(zip(completions, toks, lps, budgets,
                                                             checked_at, strict=True)):
        end = budget_r if at is None else min(at, budget_r)
        for t, lp in zip(row_t[:end], row_lp[:end], strict=True):
            if t in stops:
                c.finish_reason, c.stop_id = "stop", t
                break
            c.token_ids.append(t)
            c.logprobs.append(lp)
        if tops is not None:
            ids_r, lps_r = tops[r]
            c.top_logprobs = [list(zip(i, v, strict=True))
                              for i, v in zip(ids_r[:len(c.token_ids)], lps_r, strict=False)]
        # a row that ran to its length gets a last check (its final tokens were not seen)
        if c.finish_reason != "stop" and (at is not None or (
                stop_check is not None and stop_check(r, c.token_ids))):
            c.finish_reason = "stop"
    return completions


def _run_stop_check(stop_check: StopCheck, tokens: torch.Tensor, done: torch.Tensor,
                    checked_at: list[int | None]) -> None:
    """Ask ``stop_check`` about every row still running (``tokens`` ``[b, n]``: the new
    tokens so far); mark the ones it ends, and at how many tokens."""
    running = (~done).nonzero().squeeze(-1).tolist()
    if not running:
        return
    host = tokens[running].cpu().tolist()
    ended = [r for r, ids in zip(running, host, strict=True) if stop_check(r, ids)]
    if ended:
        done[torch.tensor(ended, device=done.device)] = True
        for r in ended:
            checked_at[r] = tokens.shape[1]
