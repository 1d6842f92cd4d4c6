"""What the RL stages share: prompts, rollouts (generation + reward), log-probs, minibatches.

Prompts come from a ``dataset/prompt`` artifact (``prompt`` messages, optional ``reference``,
``tests``, ``entry_point`` ...) or a ``dataset/chat`` one (the conversation up to its last
assistant turn is the prompt; that turn is the ``reference``). Each is rendered with the chat
template and a generation prompt (``<|assistant|>``) and cut to its last ``max_prompt_tokens``.

A rollout of iteration ``i`` takes the prompts ``EpochSampler(seed).indices(i)`` and samples
``samples_per_prompt`` completions of each with :func:`lmforge.generation.generate` (stop at
``<|end|>`` or ``<|endoftext|>``), seeded by ``(seed, i)``: a resumed run draws the same
rollouts. **Every rank generates the whole batch** with the same seed (so a sharded model's
collectives line up and every rank holds the same completions), then keeps its share: prompts
``rank, rank + W, ...`` with all their samples. Only the share is scored and trained on.

A completion that ended with a stop token is trained on *with* that token (the policy learns
to stop); its text, given to the reward, excludes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge import StageInputError
from lmforge.chat import END, TokenizerArtifact, encode_chat, validate_messages
from lmforge.datasetio import load_split
from lmforge.generation import Completion, SamplingParams, generate
from lmforge.rewards import RewardSample

IGNORE = -100
_KNOWN = ("prompt", "messages", "reference", "tests")


@dataclass
class Prompts:
    """Prompts of one split: messages, their token ids and what a reward may need."""

    messages: list[list[dict[str, str]]]
    ids: list[list[int]]
    reference: list[str | None]
    tests: list[str | None]
    meta: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.ids)


def load_prompts(dataset: Path, split: str, tok: TokenizerArtifact, max_prompt_tokens: int,
                 limit: int | None = None) -> Prompts:
    """The prompts of ``split`` of a ``dataset/prompt`` or ``dataset/chat`` artifact (see the
    module docstring); at most ``limit`` (the first rows)."""
    where = f"dataset {dataset}, split {split!r}"
    ds = load_split(dataset, split)
    cols = set(ds.column_names)
    if "prompt" not in cols and "messages" not in cols:
        raise StageInputError(f"{where} has neither a 'prompt' nor a 'messages' column (has "
                              f"{sorted(cols)}); RL stages take a dataset/prompt or "
                              f"dataset/chat artifact")
    out = Prompts([], [], [], [], [])
    n = ds.num_rows if limit is None else min(limit, ds.num_rows)
    for i, row in enumerate(ds.select(range(n))):
        reference = row.get("reference")
        if "prompt" in cols:
            raw = row["prompt"]
            if isinstance(raw, str):
                raw = [{"role": "user", "content": raw}]
            msgs = validate_messages(raw, f"{where}, row {i} ('prompt')", need_assistant=False)
        else:
            msgs = validate_messages(row["messages"], f"{where}, row {i} ('messages')",
                                     need_assistant=False)
            last = max((j for j, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last is not None:
                reference = reference if reference is not None else msgs[last]["content"]
                msgs = msgs[:last]
            if not msgs:
                raise StageInputError(f"{where}, row {i}: the conversation starts with the "
                                      f"assistant; there is no prompt before its reply")
        ids = encode_chat(tok.tokenizer, msgs, add_generation_prompt=True)[0]
        out.messages.append(msgs)
        out.ids.append(ids[-max_prompt_tokens:])
        out.reference.append(None if reference is None else str(reference))
        tests = row.get("tests")
        out.tests.append(None if tests is None else str(tests))
        out.meta.append({k: v for k, v in row.items() if k not in _KNOWN})
    if not out.ids:
        raise StageInputError(f"{where} has no rows; RL needs prompts")
    return out


def stop_ids(tok: TokenizerArtifact) -> tuple[int, ...]:
    """Tokens that end a completion: the end of the assistant's turn and end-of-text."""
    end = tok.tokenizer.token_to_id(END)
    return tuple(sorted({t for t in (end, tok.eos_id) if t is not None}))


@dataclass
class Batch:
    """Completions of one rank's share, padded for training.

    ``input_ids``/``labels`` ``[N, L]`` (prompt + completion (+ stop token), right padded;
    labels are the next token on completion positions, ``-100`` elsewhere); ``mask`` ``[N, L]``
    float (1 where ``labels`` is a completion token); ``scores`` ``[N]`` the reward;
    ``group`` ``[N]`` the prompt index within the share; ``gen_logp`` ``[N, L]`` the sampler's
    log-probs (for the entropy estimate); per-token tensors a stage adds (``old_logp``,
    ``ref_logp``, ``values``, ``advantages``, ``returns``) go in :attr:`tensors`.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    scores: torch.Tensor
    group: torch.Tensor
    gen_logp: torch.Tensor
    lengths: torch.Tensor
    stopped: torch.Tensor
    details: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self, index: torch.Tensor, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """The micro-batch of rows ``index``: ``input_ids``, ``labels``, ``mask`` and ``keys``
        of :attr:`tensors` (or per-row fields: ``scores``), trimmed to its longest row."""
        width = int(self.lengths[index].max())
        out = {"input_ids": self.input_ids[index, :width], "labels": self.labels[index, :width],
               "mask": self.mask[index, :width]}
        for k in keys:
            t = self.tensors[k] if k in self.tensors else getattr(self, k)
            out[k] = t[index, :width] if t.dim() == 2 else t[index]
        return out


def build_batch(prompt_ids: list[list[int]], completions: list[Completion], pad_id: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                           torch.Tensor]:
    """Pack (prompt, completion) rows: ``(input_ids, labels, mask, gen_logp, lengths,
    stopped)`` as described in :class:`Batch`; ``lengths`` counts input positions."""
    seqs, starts, gens = [], [], []
    for p, c in zip(prompt_ids, completions, strict=True):
        resp = list(c.token_ids) + ([c.stop_id] if c.stop_id is not None else [])
        lps = list(c.logprobs) + ([0.0] if c.stop_id is not None else [])
        seqs.append(list(p) + resp)
        starts.append(len(p))
        gens.append(lps)
    width = max(len(s) for s in seqs) - 1
    n = len(seqs)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    gen = torch.zeros((n, width), dtype=torch.float32)
    lengths = torch.zeros(n, dtype=torch.long)
    for r, (s, st, g) in enumerate(zip(seqs, starts, gens, strict=True)):
        t = torch.tensor(s, dtype=torch.long)
        ids[r, :len(s) - 1] = t[:-1]
        labels[r, st - 1:len(s) - 1] = t[st:]
        gen[r, st - 1:len(s) - 1] = torch.tensor(g, dtype=torch.float32)
        lengths[r] = len(s) - 1
    mask = (labels != IGNORE).float()
    stopped = torch.tensor([c.finish_reason == "stop" for c in completions])
    return ids, labels, mask, gen, lengths, stopped


class Roller:
    """Samples and scores the rollouts of a stage (see the module docstring).

    Args:
        prompts: the training prompts.
        tok: the tokenizer artifact.
        rollout: a :class:`lmforge_align.rl_config.RolloutConfig`.
        reward: the built reward component (``setup`` already called).
        backend: the training backend (device, autocast, ranks).
        seed: the stage's seed.
    """

    def __init__(self, prompts: Prompts, tok: TokenizerArtifact, rollout: Any, reward: Any,
                 backend: Any, seed: int) -> None:
        from lmforge.training.sampling import EpochSampler

        self.prompts, self.tok, self.cfg, self.reward = prompts, tok, rollout, reward
        self.backend, self.seed = backend, seed
        self.sampler = EpochSampler(len(prompts), rollout.prompts, 1, 1, seed=seed)
        self.stop_ids = stop_ids(tok)

    def params(self, iteration: int, n: int) -> SamplingParams:
        c = self.cfg
        return SamplingParams(max_new_tokens=c.max_new_tokens, temperature=c.temperature,
                              top_k=c.top_k, top_p=c.top_p, n=n, stop_ids=self.stop_ids,
                              seed=(self.seed * 1_000_003 + iteration) % 2**31)

    def share(self, indices: Sequence[int]) -> list[int]:
        """This rank's prompts among ``indices`` (every rank gets the same number)."""
        world = self.backend.world_size
        if len(indices) % world:
            raise StageInputError(f"rollout.prompts ({len(indices)}) must be divisible by the "
                                  f"number of ranks ({world})")
        return list(indices)[self.backend.rank::world]

    def sample(self, module: torch.nn.Module, prompts: Prompts, indices: Sequence[int],
               params: SamplingParams) -> Batch:
        """Generate for ``indices`` of ``prompts`` on every rank, keep and score this rank's
        share: a :class:`Batch` ordered by (prompt, sample)."""
        be = self.backend
        all_ids = [prompts.ids[i] for i in indices]
        completions = generate(module, all_ids, params, pad_id=self.tok.pad_id,
                               device=be.device, batch_size=self.cfg.batch_size,
                               autocast=be.autocast)
        world = be.world_size
        mine = [k for k in range(len(indices)) if k % world == be.rank]
        wanted = set(mine)
        keep = sorted((c for c in completions if c.prompt_index in wanted),
                      key=lambda c: (c.prompt_index, c.sample_index))
        rows = [indices[c.prompt_index] for c in keep]
        ids, labels, mask, gen, lengths, stopped = build_batch(
            [prompts.ids[i] for i in rows], keep, self.tok.pad_id)
        texts = [self.tok.decode(c.token_ids) for c in keep]
        samples = [RewardSample(prompt=prompts.messages[i], completion=t,
                                reference=prompts.reference[i], tests=prompts.tests[i],
                                meta=prompts.meta[i]) for i, t in zip(rows, texts, strict=True)]
        out = self.reward.score(samples)
        if len(out.scores) != len(samples):
            raise RuntimeError(f"the reward returned {len(out.scores)} scores for "
                               f"{len(samples)} completions")
        scores = torch.tensor([float(s) for s in out.scores], dtype=torch.float32)
        if not bool(torch.isfinite(scores).all()):
            raise RuntimeError("the reward returned a non-finite score")
        if self.cfg.no_stop_penalty is not None:
            scores = scores + (~stopped).float() * float(self.cfg.no_stop_penalty)
        group = torch.tensor([mine.index(c.prompt_index) for c in keep], dtype=torch.long)
        return Batch(ids, labels, mask, scores, group, gen, lengths, stopped,
                     details=list(out.details), texts=texts)

    def iteration(self, module: torch.nn.Module, iteration: int) -> Batch:
        """The rollout batch of ``iteration`` (this rank's share)."""
        indices = [int(i) for i in self.sampler.indices(iteration, 0, 0)]
        self.share(indices)
        return self.sample(module, self.prompts, indices,
                           self.params(iteration, self.cfg.samples_per_prompt))


@torch.no_grad()
def token_logprobs(module: torch.nn.Module, batch: Batch, micro_batch_size: int,
                   backend: Any) -> torch.Tensor:
    """``log p(label)`` of every completion token under ``module``: float32 ``[N, L]``, 0 off
    the completion. Every rank runs the same number of forwards (equal shares)."""
    was = module.training
    module.eval()
    out = torch.zeros_like(batch.mask)
    try:
        for start in range(0, len(batch), micro_batch_size):
            idx = torch.arange(start, min(start + micro_batch_size, len(batch)))
            mb = batch.rows(idx, ())
            with backend.autocast():
                res = module(mb["input_ids"].to(backend.device),
                             labels=mb["labels"].to(backend.device), return_logprobs=True)
            width = mb["input_ids"].shape[1]
            out[idx, :width] = res.token_logprobs.float().cpu() * mb["mask"]
    finally:
        module.train(was)
    return out


def shuffled_minibatches(n: int, minibatches: int, seed: int, iteration: int, epoch: int
                         ) -> list[torch.Tensor]:
    """Row indices of each minibatch of one epoch: a permutation drawn from
    ``(seed, iteration, epoch)`` (not the global RNG), cut into ``minibatches`` parts."""
    if minibatches > n:
        raise StageInputError(f"loop.minibatches ({minibatches}) is more than the rollout "
                              f"batch of a rank ({n} completions); lower it")
    rng = np.random.default_rng([seed, iteration, epoch])
    perm = torch.from_numpy(rng.permutation(n))
    return [p for p in torch.tensor_split(perm, minibatches)]


def micro_split(index: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [index[i:i + size] for i in range(0, len(index), size)]
