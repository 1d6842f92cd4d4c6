"""The ``pretrain`` stage: next-token prediction on packed text blocks."""

from __future__ import annotations

from typing import Any

from lmforge import Stage, StageInputError
from lmforge.datasetio import read_meta, split_files
from lmforge.modelio import ModelRecipe
from lmforge.training.loop import Trainer, build_backend, data_parallel
from lmforge.training.losses import lm_loss
from lmforge.training.sampling import EpochSampler
from lmforge.training.stagekit import (
    cache_key,
    check_seq_len,
    check_vocab,
    finish_training,
    heldout_metrics,
    init_model_info,
    init_recipe,
    load_tokenizer_input,
    main_first,
)
from lmforge_train.config import PretrainConfig
from lmforge_train.data import BlockBatches, token_stream


class PretrainStage(Stage):
    config: PretrainConfig

    def check(self) -> None:
        ctx, cfg = self.ctx, self.config
        ds = ctx.input("dataset")
        split_files(ds.path, "train")
        tok = load_tokenizer_input(ctx)
        check_seq_len(ctx, cfg.loop.seq_len, getattr(cfg.model, "max_seq_len", None),
                      f"config.model ({cfg.model.type})")
        if "init" in ctx.inputs:
            arch, vocab, path = init_model_info(ctx)
            want = cfg.model.model_dump(mode="json")
            if arch != want:
                diff = sorted(k for k in set(arch) | set(want) if arch.get(k) != want.get(k))
                raise StageInputError(
                    f"stage {ctx.stage_id!r}: config.model differs from the architecture of the "
                    f"init model {path} in {diff}; set config.model to {arch}")
            check_vocab(ctx, tok.vocab_size, vocab, str(path))

    def run(self) -> dict[str, Any]:
        ctx, cfg, loop = self.ctx, self.config, self.config.loop
        tok = load_tokenizer_input(ctx)
        ds = ctx.input("dataset")
        key = cache_key(ds.hash, ctx.input("tokenizer").hash)
        work = ctx.work_dir()
        stream = main_first(lambda: token_stream(work / f"tokens-train-{key}", ds.path, "train",
                                                 tok, cfg.num_proc))
        backend = build_backend(ctx, loop)
        blocks = BlockBatches(stream, loop.seq_len)
        need = loop.batch_size * data_parallel(backend)[1]
        if blocks.num_blocks < need:
            raise StageInputError(
                f"stage {ctx.stage_id!r}: the train split of {ds.path} has {len(stream)} tokens, "
                f"i.e. {blocks.num_blocks} blocks of seq_len + 1 = {loop.seq_len + 1} tokens, but "
                f"one micro-batch needs {need} blocks ({need * loop.seq_len + 1} tokens); add data "
                f"or lower loop.batch_size / loop.seq_len")
        blocks.sampler = EpochSampler(blocks.num_blocks, loop.batch_size, loop.grad_accum,
                                      data_parallel(backend)[1], seed=ctx.seed)

        if "init" in ctx.inputs:
            recipe = init_recipe(ctx)
        else:
            recipe = ModelRecipe.fresh(cfg.model, tok.vocab_size, ctx.plugins, ctx.seed)
        trainer = Trainer(ctx, recipe, loop, lm_loss, blocks, backend=backend,
                          data_state={"blocks": blocks.num_blocks, "seq_len": loop.seq_len,
                                      "seed": ctx.seed})
        result = trainer.train()

        metrics: dict[str, Any] = {"train/loss": result.final_loss, "steps": result.steps,
                                   "tokens": result.tokens_seen,
                                   "epochs": round(blocks.sampler.epochs(result.steps), 3)}
        if cfg.eval_batches and "heldout" in read_meta(ds.path).get("splits", {}):
            held = main_first(lambda: token_stream(work / f"tokens-heldout-{key}", ds.path,
                                                   "heldout", tok, cfg.num_proc))
            hb = BlockBatches(held, loop.seq_len)
            if hb.num_blocks:
                metrics.update(heldout_metrics(
                    ctx, backend, trainer.module, lm_loss,
                    hb.sequential(loop.batch_size, cfg.eval_batches,
                                  *data_parallel(backend)), result.steps, "tokens"))
        finish_training(ctx, trainer)
        return metrics
