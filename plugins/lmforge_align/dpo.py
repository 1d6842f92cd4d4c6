"""The ``dpo`` stage: direct preference optimisation of an SFT model.

Each pair is rendered as ``encode_chat(prompt, add_generation_prompt=True)`` followed by the
tokens of ``chosen + "<|end|>"`` (resp. ``rejected``); only response tokens carry log-prob.
When a pair is longer than ``seq_len + 1`` tokens the prompt is cut from the left (keeping at
least half the window) and then the responses from the right; chosen and rejected always share
the same prompt tokens.

The reference is the init model. Its log-probabilities of every pair are computed once, before
training, and cached under the stage's work folder, so no reference copy is held in memory while
training and a resumed run does not recompute them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge import Stage, StageInputError
from lmforge.chat import END, TokenizerArtifact, encode_chat, validate_messages
from lmforge.datasetio import load_split, read_meta
from lmforge.training.loop import (
    LossOutput,
    Trainer,
    build_backend,
    data_parallel,
    evaluate,
    to_device,
)
from lmforge.training.losses import sequence_logprobs
from lmforge.training.sampling import EpochSampler
from lmforge.training.stagekit import (
    cache_key,
    cache_problem,
    cached_arrays,
    check_init_stage,
    finish_training,
    init_recipe,
    load_tokenizer_input,
    main_first,
    token_dtype,
)
from lmforge_align.config import DPOConfig
from lmforge_align.preference_loss import dpo_loss

IGNORE = -100


# -- data ---------------------------------------------------------------------------------------
def fit_pair(prompt: list[int], chosen: list[int], rejected: list[int], width: int
             ) -> tuple[list[int], list[int], list[int], bool]:
    """Truncate so ``prompt + response <= width`` for both responses (see module docstring)."""
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest <= width:
        return prompt, chosen, rejected, False
    keep = min(len(prompt), max(width - longest, width // 2))
    prompt = prompt[len(prompt) - keep:]
    room = width - len(prompt)
    return prompt, chosen[:room], rejected[:room], True


def _encode_pairs(batch: dict[str, list], indices: list[int], tokenizer: Any, where: str
                  ) -> dict[str, list]:
    out: dict[str, list] = {"prompt": [], "chosen": [], "rejected": []}
    for i, prompt, chosen, rejected in zip(indices, batch["prompt"], batch["chosen"],
                                           batch["rejected"]):
        msgs = validate_messages(prompt, f"{where}, row {i} ('prompt')", need_assistant=False)
        for name, v in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(v, str):
                raise StageInputError(f"{where}, row {i}: {name!r} must be the assistant reply "
                                      f"as a string, got {type(v).__name__}")
        out["prompt"].append(encode_chat(tokenizer, msgs, add_generation_prompt=True)[0])
        out["chosen"].append(tokenizer.encode(chosen + END, add_special_tokens=False).ids)
        out["rejected"].append(tokenizer.encode(rejected + END, add_special_tokens=False).ids)
    return out


def pair_arrays(folder: Path, dataset: Path, split: str, tok: TokenizerArtifact, seq_len: int,
                num_proc: int = 1) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Pairs of a split as padded arrays: ``tokens`` ``[N, 2, seq_len + 1]`` (0: chosen,
    1: rejected), ``mask`` (1 on response tokens), ``lengths`` ``[N, 2]``."""
    where = f"dataset {dataset}, split {split!r}"
    width = seq_len + 1

    def build(tmp: Path) -> dict[str, Any]:
        ds = load_split(dataset, split)
        missing = {"prompt", "chosen", "rejected"} - set(ds.column_names)
        if missing:
            raise StageInputError(f"{where} lacks columns {sorted(missing)} (has "
                                  f"{ds.column_names}); DPO needs a dataset/preference artifact")
        ds = ds.map(_encode_pairs, batched=True, with_indices=True, num_proc=num_proc,
                    remove_columns=ds.column_names, desc=f"tokenising {split}",
                    fn_kwargs={"tokenizer": tok.tokenizer, "where": where})
        n = ds.num_rows
        tokens = np.lib.format.open_memmap(tmp / "tokens.npy", "w+", token_dtype(tok.vocab_size),
                                           (n, 2, width))
        mask = np.lib.format.open_memmap(tmp / "mask.npy", "w+", np.uint8, (n, 2, width))
        tokens[:] = tok.pad_id
        mask[:] = 0
        lengths = np.zeros((n, 2), dtype=np.int32)
        truncated, row = 0, 0
        for b in ds.iter(batch_size=1024):
            for p, c, r in zip(b["prompt"], b["chosen"], b["rejected"]):
                p, c, r, cut = fit_pair(p, c, r, width)
                truncated += cut
                for j, resp in enumerate((c, r)):
                    seq = p + resp
                    tokens[row, j, :len(seq)] = seq
                    mask[row, j, len(p):len(seq)] = 1
                    lengths[row, j] = len(seq)
                row += 1
        tokens.flush()
        mask.flush()
        del tokens, mask
        np.save(tmp / "lengths.npy", lengths)
        return {"rows": n, "truncated": int(truncated), "split": split}

    return cached_arrays(folder, build)


class PairBatches:
    """Micro-batches of pairs: ``input_ids``/``labels`` ``[2B, T]`` (chosen rows first, then
    rejected; labels ``-100`` off the response), ``ref_chosen``/``ref_rejected`` ``[B]``."""

    def __init__(self, arrays: dict[str, np.ndarray], sampler: EpochSampler | None = None,
                 ref: np.ndarray | None = None) -> None:
        self.tokens, self.mask, self.lengths = arrays["tokens"], arrays["mask"], arrays["lengths"]
        self.sampler, self.ref = sampler, ref

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        width = int(self.lengths[rows].max())
        tok = np.asarray(self.tokens[rows, :, :width], dtype=np.int64)  # [B, 2, W]
        msk = np.asarray(self.mask[rows, :, :width], dtype=bool)
        tok = torch.from_numpy(np.concatenate([tok[:, 0], tok[:, 1]]))  # [2B, W]
        msk = torch.from_numpy(np.concatenate([msk[:, 0], msk[:, 1]]))
        labels = torch.where(msk[:, 1:], tok[:, 1:], torch.full_like(tok[:, 1:], IGNORE))
        batch = {"input_ids": tok[:, :-1].contiguous(), "labels": labels.contiguous()}
        if self.ref is not None:
            ref = torch.from_numpy(np.asarray(self.ref[rows], dtype=np.float32))
            batch["ref_chosen"] = ref[:, 0].contiguous()
            batch["ref_rejected"] = ref[:, 1].contiguous()
        return batch

    def micro_batches(self, step: int, rank: int, world_size: int) -> list[dict[str, torch.Tensor]]:
        assert self.sampler is not None
        return [self.rows(np.sort(self.sampler.indices(step, m, rank)))
                for m in range(self.sampler.grad_accum)]

    def sequential(self, batch_size: int, max_batches: int | None = None, rank: int = 0,
                   world_size: int = 1):
        order = np.arange(len(self))[rank::world_size]
        n = -(-len(order) // batch_size)
        for b in range(n if max_batches is None else min(n, max_batches)):
            yield self.rows(order[b * batch_size:(b + 1) * batch_size])


@torch.no_grad()
def reference_logps(module: torch.nn.Module, pairs: PairBatches, batch_size: int,
                    backend: Any) -> np.ndarray:
    """Summed response log-probs of every pair under ``module``: float32 ``[N, 2]``.

    Collective: every data-parallel rank scores its share of the pairs (rank ``r`` of ``W``
    takes pairs ``r, r + W, ...``; a sharded module needs every rank in each forward, and
    model-parallel peers score the same share) and the shares are gathered, so every rank
    returns all ``N`` rows."""
    from lmforge import dist

    rank, world = data_parallel(backend)
    n = len(pairs)
    steps = -(-n // (batch_size * world))  # the same number of forwards on every rank
    order = np.arange(n)[rank::world]
    was = module.training
    module.eval()
    out = []
    try:
        for i in range(steps):
            rows = order[i * batch_size:(i + 1) * batch_size]
            if len(rows) == 0:  # this rank ran out: a dummy forward keeps collectives aligned
                rows = np.arange(min(batch_size, n))
                keep = 0
            else:
                keep = len(rows)
            b = to_device(pairs.rows(rows), backend.device)
            with backend.autocast():
                lp = sequence_logprobs(module, b["input_ids"], b["labels"])
            half = lp.shape[0] // 2
            out.append(torch.stack([lp[:half], lp[half:]], dim=1).float().cpu()[:keep])
    finally:
        module.train(was)
    mine = torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)
    result = np.zeros((n, 2), dtype=np.float32)
    for r, part in dist.all_gather((rank, mine)):  # model-parallel peers send equal shares
        result[np.arange(n)[r::world]] = part
    return result


class DPOLoss:
    """The trainer's loss: summed DPO loss over the micro-batch's pairs, plus reward sums."""

    def __init__(self, beta: float, loss_type: str, label_smoothing: float) -> None:
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing

    def __call__(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        logps = sequence_logprobs(module, batch["input_ids"], batch["labels"])
        half = logps.shape[0] // 2
        pc, pr = logps[:half], logps[half:]
        losses, cr, rr = dpo_loss(pc, pr, batch["ref_chosen"], batch["ref_rejected"], self.beta,
                                  self.loss_type, self.label_smoothing)
        return LossOutput(losses.sum(), half, {
            "rewards/chosen": cr.sum(), "rewards/rejected": rr.sum(),
            "rewards/margin": (cr - rr).sum(), "rewards/accuracy": (cr > rr).float().sum(),
            "logps/chosen": pc.detach().sum(), "logps/rejected": pr.detach().sum()})


# -- the stage ----------------------------------------------------------------------------------
class DPOStage(Stage):
    config: DPOConfig

    def check(self) -> None:
        check_init_stage(self.ctx, self.config.loop.seq_len)

    def _pairs(self, split: str, backend: Any, tok: TokenizerArtifact, module: torch.nn.Module
               ) -> tuple[PairBatches, dict[str, Any]]:
        ctx, cfg, loop = self.ctx, self.config, self.config.loop
        ds, init = ctx.input("dataset"), ctx.input("init")
        key = cache_key(ds.hash, ctx.input("tokenizer").hash, loop.seq_len)
        work = ctx.work_dir()
        arrays, info = main_first(lambda: pair_arrays(
            work / f"pairs-{split}-{key}", ds.path, split, tok, loop.seq_len, cfg.num_proc))
        pairs = PairBatches(arrays)
        ref_key = cache_key(key, init.hash, str(backend.device.type))

        def build_ref() -> np.ndarray:
            return reference_logps(module, pairs, loop.batch_size, backend)

        ref = reference_cache(work / f"ref-{split}-{ref_key}", build_ref)
        pairs.ref = ref
        return pairs, info

    def run(self) -> dict[str, Any]:
        ctx, cfg, loop = self.ctx, self.config, self.config.loop
        tok = load_tokenizer_input(ctx)
        backend = build_backend(ctx, loop)
        loss_fn = DPOLoss(cfg.beta, cfg.loss_type, cfg.label_smoothing)
        trainer = Trainer(ctx, init_recipe(ctx), loop, loss_fn, _NoBatches(), backend=backend)
        # The policy has not been updated yet: it is the reference (weights of `init`).
        pairs, info = self._pairs("train", backend, tok, trainer.module)
        has_heldout = cfg.eval_batches and "heldout" in read_meta(
            ctx.input("dataset").path).get("splits", {})
        held = self._pairs("heldout", backend, tok, trainer.module)[0] if has_heldout else None
        pairs.sampler = EpochSampler(len(pairs), loop.batch_size, loop.grad_accum,
                                     data_parallel(backend)[1], seed=ctx.seed)
        trainer.batches = pairs
        trainer.data_state = {"pairs": len(pairs), "seed": ctx.seed}
        result = trainer.train()

        metrics: dict[str, Any] = {"train/loss": result.final_loss, "steps": result.steps,
                                   "pairs": info["rows"], "truncated": info["truncated"],
                                   "epochs": round(pairs.sampler.epochs(result.steps), 3)}
        last = {k: v for k, v in ctx.last_metrics.items() if k.startswith("train/rewards/")}
        metrics.update(last)
        if held is not None and len(held):
            ev = evaluate(trainer.module, loss_fn,
                          held.sequential(loop.batch_size, cfg.eval_batches,
                                          *data_parallel(backend)), backend)
            metrics.update({"heldout/loss": ev["loss"],
                            "heldout/accuracy": ev["rewards/accuracy"],
                            "heldout/margin": ev["rewards/margin"],
                            "heldout/rewards/chosen": ev["rewards/chosen"],
                            "heldout/rewards/rejected": ev["rewards/rejected"],
                            "heldout/pairs": int(ev["count"])})
            ctx.log(result.steps, {k: v for k, v in metrics.items() if k.startswith("heldout/")})
        finish_training(ctx, trainer, {"beta": cfg.beta, "loss_type": cfg.loss_type})
        return metrics


def reference_cache(folder: Path, build: Any) -> np.ndarray:
    """The reference log-probs cached in ``folder``, computed once. Computing is collective
    (every rank scores a share), writing is the main rank's: the others wait, then load."""
    from lmforge import dist

    if dist.main_decides(lambda: cache_problem(folder) is not None):
        result = build()  # collective
        if dist.is_main():
            def write(tmp: Path) -> dict[str, Any]:
                np.save(tmp / "ref.npy", result)
                return {"rows": int(len(result))}

            cached_arrays(folder, write)
        dist.barrier()
    arrays, _ = cached_arrays(folder, lambda tmp: {})
    return arrays["ref"]


class _NoBatches:
    def micro_batches(self, step: int, rank: int, world_size: int) -> list:
        raise RuntimeError("batches are set after the reference log-probs are computed")
