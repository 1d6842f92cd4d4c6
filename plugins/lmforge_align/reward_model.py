"""The ``reward-model`` stage: a Bradley-Terry reward model trained on preference pairs.

The model is the ``init`` model (an SFT model) with its vocabulary projection replaced by a
freshly initialised score head (``head: score``, :meth:`lmforge.modelio.ModelRecipe.from_artifact`
with ``head="score"``). A pair is encoded as DPO encodes it (:func:`lmforge.chat.encode_reply`:
the prompt with the generation prompt, then ``reply + "<|end|>"``; long pairs cut as
:func:`lmforge_align.dpo.fit_pair` cuts them) and a reply's reward ``r`` is the model's score at
the reply's last token (the end-of-turn marker). The loss of a pair is

    -log sigmoid(r_chosen - r_rejected - margin) + center_coef * (r_chosen + r_rejected)^2

with ``margin = config.margin (+ the pair's margin_column)``. The first term is the
Bradley-Terry negative log-likelihood that the chosen reply wins; it only fixes reward
*differences*, so the optional second term (centring) pulls the pair's mean reward to zero,
which keeps rewards comparable across prompts and PPO's reward scale stable.

Held-out pair accuracy (``r_chosen > r_rejected``), loss and mean margin are reported before
training (the fresh head: near chance) and after. Training runs on the shared
:class:`lmforge.training.loop.Trainer` (checkpoints, exact resume); the before-training
evaluation is cached in the work folder, so a resumed run reports the same numbers.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmforge import Stage, StageInputError
from lmforge.datasetio import load_split, read_meta
from lmforge.fsutil import atomic_write_text
from lmforge.modelio import ModelRecipe, architecture_config, with_head
from lmforge.training.loop import LossOutput, Trainer, build_backend, data_parallel, evaluate
from lmforge.training.sampling import EpochSampler
from lmforge.training.stagekit import (
    cache_key,
    check_init_stage,
    finish_training,
    load_tokenizer_input,
    main_first,
)
from lmforge_align.config import RewardModelConfig
from lmforge_align.dpo import pair_arrays


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor,
                       center_coef: float) -> torch.Tensor:
    """Per-pair loss ``[B]``: ``-log sigmoid(chosen - rejected - margin) + center_coef *
    (chosen + rejected)^2`` (``softplus(-x) == -log sigmoid(x)``, stable for any x)."""
    loss = F.softplus(-(chosen - rejected - margin))
    if center_coef:
        loss = loss + center_coef * (chosen + rejected) ** 2
    return loss


def pair_scores(module: torch.nn.Module, input_ids: torch.Tensor, last: torch.Tensor
                ) -> torch.Tensor:
    """The score of each row ``[N]`` at its last real token ``last`` ``[N]`` (right-padded
    rows: a causal model's score at ``last`` never sees the padding after it)."""
    scores = module(input_ids).scores  # [N, T]
    return scores.gather(1, last[:, None]).squeeze(1).float()


class RewardPairs:
    """Micro-batches of pairs: ``input_ids`` ``[2B, W]`` (chosen rows first), ``last``
    ``[2B]`` (index of each row's last token), ``margin`` ``[B]``."""

    def __init__(self, arrays: dict[str, np.ndarray], margins: np.ndarray,
                 sampler: EpochSampler | None = None) -> None:
        self.tokens, self.lengths = arrays["tokens"], arrays["lengths"]
        self.margins, self.sampler = margins, sampler

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        width = int(self.lengths[rows].max())
        tok = np.asarray(self.tokens[rows, :, :width], dtype=np.int64)  # [B, 2, W]
        lengths = np.asarray(self.lengths[rows], dtype=np.int64)  # [B, 2]
        return {"input_ids": torch.from_numpy(np.concatenate([tok[:, 0], tok[:, 1]])),
                "last": torch.from_numpy(np.concatenate([lengths[:, 0], lengths[:, 1]]) - 1),
                "margin": torch.from_numpy(np.asarray(self.margins[rows], dtype=np.float32))}

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


class RewardLoss:
    """The trainer's loss: summed Bradley-Terry loss over the micro-batch's pairs, plus the
    sums behind accuracy, margin and the mean rewards."""

    def __init__(self, center_coef: float) -> None:
        self.center_coef = center_coef

    def __call__(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        r = pair_scores(module, batch["input_ids"], batch["last"])
        half = r.shape[0] // 2
        rc, rr = r[:half], r[half:]
        losses = bradley_terry_loss(rc, rr, batch["margin"], self.center_coef)
        d = (rc - rr).detach()
        return LossOutput(losses.sum(), half, {
            "accuracy": (d > 0).float().sum(), "margin": d.sum(),
            "rewards/chosen": rc.detach().sum(), "rewards/rejected": rr.detach().sum()})


class RewardModelStage(Stage):
    config: RewardModelConfig

    def check(self) -> None:
        ctx = self.ctx
        check_init_stage(ctx, self.config.loop.seq_len)
        init = ctx.input("init").path
        with_head(architecture_config(init, ctx.plugins), "score", f"stage {ctx.stage_id!r}: "
                  f"init model {init}")
        col = self.config.margin_column
        if col is not None:
            columns = read_meta(ctx.input("dataset").path).get("columns") or []
            if columns and col not in columns:
                raise StageInputError(f"stage {ctx.stage_id!r}: margin_column {col!r} is not a "
                                      f"column of {ctx.input('dataset').path} (it has "
                                      f"{columns})")

    def _margins(self, split: str, n: int) -> np.ndarray:
        cfg = self.config
        margins = np.full(n, cfg.margin, dtype=np.float32)
        if cfg.margin_column is not None:
            ds = load_split(self.ctx.input("dataset").path, split)
            if cfg.margin_column not in ds.column_names:
                raise StageInputError(f"stage {self.ctx.stage_id!r}: split {split!r} has no "
                                      f"column {cfg.margin_column!r} (margin_column)")
            values = np.asarray(ds[cfg.margin_column], dtype=np.float32)
            if not np.isfinite(values).all():
                raise StageInputError(f"stage {self.ctx.stage_id!r}: column "
                                      f"{cfg.margin_column!r} of split {split!r} holds "
                                      f"non-finite values")
            margins += values
        return margins

    def _pairs(self, split: str, tok: Any) -> tuple[RewardPairs, dict[str, Any]]:
        ctx, cfg, loop = self.ctx, self.config, self.config.loop
        ds = ctx.input("dataset")
        key = cache_key(ds.hash, ctx.input("tokenizer").hash, loop.seq_len)
        # width seq_len: every row is a whole sequence (no shifted labels)
        arrays, info = main_first(lambda: pair_arrays(
            ctx.work_dir() / f"pairs-{split}-{key}", ds.path, split, tok, loop.seq_len - 1,
            cfg.num_proc))
        return RewardPairs(arrays, self._margins(split, len(arrays["lengths"]))), info

    def _heldout(self, trainer: Trainer, held: RewardPairs, loss_fn: RewardLoss
                 ) -> dict[str, float]:
        loop = self.config.loop
        ev = evaluate(trainer.module, loss_fn, held.sequential(
            loop.batch_size, self.config.eval_batches, *data_parallel(trainer.backend)),
            trainer.backend)
        return {"loss": ev["loss"], "accuracy": ev["accuracy"], "margin": ev["margin"],
                "rewards/chosen": ev["rewards/chosen"],
                "rewards/rejected": ev["rewards/rejected"], "pairs": int(ev["count"])}

    def _before(self, trainer: Trainer, held: RewardPairs, loss_fn: RewardLoss
                ) -> dict[str, float]:
        """Held-out metrics of the untrained model, computed once (collective) and cached in
        the work folder so a resumed run reports the same."""
        from lmforge import dist

        ctx = self.ctx
        file = ctx.work_dir() / f"before-{cache_key(ctx.input('init').hash, ctx.seed)}.json"
        if dist.main_decides(lambda: not file.is_file()):
            result = self._heldout(trainer, held, loss_fn)  # collective
            if ctx.is_main:
                atomic_write_text(file, json.dumps(result))
            dist.barrier()
        return json.loads(file.read_text())

    def run(self) -> dict[str, Any]:
        ctx, cfg, loop = self.ctx, self.config, self.config.loop
        tok = load_tokenizer_input(ctx)
        backend = build_backend(ctx, loop)
        loss_fn = RewardLoss(cfg.center_coef)
        pairs, info = self._pairs("train", tok)
        has_heldout = cfg.eval_batches and "heldout" in read_meta(
            ctx.input("dataset").path).get("splits", {})
        held = self._pairs("heldout", tok)[0] if has_heldout else None
        pairs.sampler = EpochSampler(len(pairs), loop.batch_size, loop.grad_accum,
                                     data_parallel(backend)[1], seed=ctx.seed)
        recipe = ModelRecipe.from_artifact(ctx.input("init").path, ctx.plugins, seed=ctx.seed,
                                           head="score")
        trainer = Trainer(ctx, recipe, loop, loss_fn, pairs, backend=backend,
                          data_state={"pairs": len(pairs), "seed": ctx.seed,
                                      "margin": cfg.margin, "margin_column": cfg.margin_column})
        before = self._before(trainer, held, loss_fn) if held is not None and len(held) else None
        result = trainer.train()

        metrics: dict[str, Any] = {"train/loss": result.final_loss, "steps": result.steps,
                                   "pairs": info["rows"], "truncated": info["truncated"],
                                   "epochs": round(pairs.sampler.epochs(result.steps), 3)}
        metrics.update({k: v for k, v in ctx.last_metrics.items()
                        if k in ("train/accuracy", "train/margin")})
        if before is not None and held is not None:
            after = self._heldout(trainer, held, loss_fn)
            heldout = {f"heldout/{k}": v for k, v in after.items()}
            heldout.update({f"heldout/{k}_before": before[k]
                            for k in ("loss", "accuracy", "margin")})
            ctx.log(result.steps, heldout)
            metrics.update(heldout)
        finish_training(ctx, trainer, {"margin": cfg.margin, "center_coef": cfg.center_coef,
                                       "head": "score"})
        return metrics
