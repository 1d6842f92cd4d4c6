"""The ``sft`` stage: supervised fine-tuning on chats, loss on assistant tokens only.

Each conversation is one row, truncated to ``seq_len + 1`` tokens and padded (micro-batches are
trimmed to their longest row). Padding rather than packing: the CausalLM protocol has no
attention mask or position ids, so packed conversations would attend to each other; with one
conversation per row the loss is exactly that of each conversation on its own.
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge import Stage, StageInputError
from lmforge.datasetio import read_meta
from lmforge.training.loop import Trainer, build_backend
from lmforge.training.sampling import EpochSampler
from lmforge.training.stagekit import (
    cache_key,
    check_init_stage,
    check_seq_len,
    check_vocab,
    finish_training,
    heldout_metrics,
    load_init_model,
    load_tokenizer_input,
)
from lmforge_train.config import SFTConfig
from lmforge_train.data import ChatBatches, chat_arrays
from lmforge_train.pretrain import lm_loss


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
        arrays, info = chat_arrays(work / f"chat-train-{key}", ds.path, "train", tok,
                                   loop.seq_len, cfg.num_proc)
        backend = build_backend(ctx, loop)
        batches = ChatBatches(arrays)
        if len(batches.keep) == 0:
            raise StageInputError(
                f"stage {ctx.stage_id!r}: none of the {info['rows']} conversations of {ds.path} "
                f"(train) has an assistant token within loop.seq_len + 1 = {loop.seq_len + 1} "
                f"tokens; raise loop.seq_len or shorten the prompts")
        batches.sampler = EpochSampler(len(batches.keep), loop.batch_size, loop.grad_accum,
                                       backend.world_size, seed=ctx.seed)

        torch.manual_seed(ctx.seed)
        model, arch, vocab = load_init_model(ctx)
        check_seq_len(ctx, loop.seq_len, getattr(model, "max_seq_len", None),
                      f"architecture {arch.type}")
        check_vocab(ctx, tok.vocab_size, vocab, str(ctx.input("init").path))
        trainer = Trainer(ctx, model, loop, lm_loss, batches, backend=backend,
                          data_state={"rows": len(batches.keep), "seed": ctx.seed})
        result = trainer.train()

        metrics: dict[str, Any] = {
            "train/loss": result.final_loss, "steps": result.steps,
            "tokens": result.tokens_seen, "conversations": info["rows"],
            "truncated": info["truncated"], "dropped": info["rows"] - info["kept"],
            "epochs": round(batches.sampler.epochs(result.steps), 3)}
        if cfg.eval_batches and "heldout" in read_meta(ds.path).get("splits", {}):
            held, _ = chat_arrays(work / f"chat-heldout-{key}", ds.path, "heldout", tok,
                                  loop.seq_len, cfg.num_proc)
            hb = ChatBatches(held)
            if len(hb.keep):
                metrics.update(heldout_metrics(
                    ctx, backend, trainer.module, lm_loss,
                    hb.sequential(loop.batch_size, cfg.eval_batches, backend.rank,
                                  backend.world_size), result.steps, "assistant_tokens"))
        finish_training(ctx, backend, trainer.module, arch, vocab, result)
        return metrics
