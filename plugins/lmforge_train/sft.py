"""The ``sft`` stage: supervised fine-tuning on chats, loss on assistant tokens only.

Each conversation is one row, truncated to ``seq_len + 1`` tokens and right-padded
(micro-batches are trimmed to their longest row). Right padding needs no attention mask: causal
attention never lets a real token see the padding after it, so the loss is exactly that of each
conversation on its own.
"""

from __future__ import annotations

from typing import Any

from lmforge import Stage, StageInputError
from lmforge.datasetio import read_meta
from lmforge.training.loop import Trainer, build_backend, data_parallel
from lmforge.training.losses import lm_loss
from lmforge.training.sampling import EpochSampler
from lmforge.training.stagekit import (
    cache_key,
    check_init_stage,
    finish_training,
    heldout_metrics,
    init_recipe,
    load_tokenizer_input,
    main_first,
)
from lmforge_train.config import SFTConfig
from lmforge_train.data import ChatBatches, chat_arrays


class SFTStage(Stage):
    config: SFTConfig

    def check(self) -> None:
        check_init_stage(self.ctx, self.config.loop.seq_len)

    def run(self) -> dict[str, Any]:
        ctx, cfg, loop = self.ctx, self.config, self.config.loop
        tok = load_tokenizer_input(ctx)
        ds = ctx.input("dataset")
        key = cache_key(ds.hash, ctx.input("tokenizer").hash, loop.seq_len)
        work = ctx.work_dir()
        arrays, info = main_first(lambda: chat_arrays(work / f"chat-train-{key}", ds.path,
                                                      "train", tok, loop.seq_len, cfg.num_proc))
        backend = build_backend(ctx, loop)
        batches = ChatBatches(arrays)
        if len(batches.keep) == 0:
            raise StageInputError(
                f"stage {ctx.stage_id!r}: none of the {info['rows']} conversations of {ds.path} "
                f"(train) has an assistant token within loop.seq_len + 1 = {loop.seq_len + 1} "
                f"tokens; raise loop.seq_len or shorten the prompts")
        batches.sampler = EpochSampler(len(batches.keep), loop.batch_size, loop.grad_accum,
                                       data_parallel(backend)[1], seed=ctx.seed)

        trainer = Trainer(ctx, init_recipe(ctx), loop, lm_loss, batches, backend=backend,
                          data_state={"rows": len(batches.keep), "seed": ctx.seed})
        result = trainer.train()

        metrics: dict[str, Any] = {
            "train/loss": result.final_loss, "steps": result.steps,
            "tokens": result.tokens_seen, "conversations": info["rows"],
            "truncated": info["truncated"], "dropped": info["rows"] - info["kept"],
            "epochs": round(batches.sampler.epochs(result.steps), 3)}
        if cfg.eval_batches and "heldout" in read_meta(ds.path).get("splits", {}):
            held, _ = main_first(lambda: chat_arrays(work / f"chat-heldout-{key}", ds.path,
                                                     "heldout", tok, loop.seq_len, cfg.num_proc))
            hb = ChatBatches(held)
            if len(hb.keep):
                metrics.update(heldout_metrics(
                    ctx, backend, trainer.module, lm_loss,
                    hb.sequential(loop.batch_size, cfg.eval_batches,
                                  *data_parallel(backend)), result.steps, "assistant_tokens"))
        finish_training(ctx, trainer)
        return metrics
