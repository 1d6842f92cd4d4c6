"""DPO step time: lmforge's ``dpo`` stage vs TRL's ``DPOTrainer``, in one run, same everything.

Same tiny Llama-family model (lmforge ``dense``; TRL gets ``LlamaForCausalLM`` built from the
dense config's ``hf_config()`` with ``to_hf(state_dict)``), same tokenizer, same preference
pairs (prompt rendered in lmforge's chat format, responses ending in ``<|end|>``), same batch
size, fp32 on CPU, same torch thread count, reference log-probs precomputed in both. Step time
is the median wall time of one optimizer step after warm-up steps.

    python benchmarks/bench_dpo.py [--steps 20] [--batch 8] [--dim 128] [--layers 2]

No network: the models, tokenizer and datasets are built locally.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from pydantic import Field  # noqa: E402

from lmforge import Component, Config, Stage, hookimpl, stage  # noqa: E402
from lmforge.chat import END, PAD, SPECIAL_TOKENS, render  # noqa: E402


# -- an in-file plugin publishing prepared folders as artifacts ---------------------------------
class FolderConfig(Config):
    path: str = Field(description="Folder to publish.")
    format: Literal["preference"] = Field(default="preference", description="Dataset format.")


class CopyStage(Stage):
    def run(self) -> dict[str, Any]:
        (name,) = self.ctx.output_kinds
        shutil.copytree(self.config.path, self.ctx.output_dir(name), dirs_exist_ok=True)
        return {}


class BenchPlugin:
    @hookimpl
    def lmforge_components(self) -> Sequence[Component]:
        return [stage(kind, "folder", config=FolderConfig, factory=CopyStage, description="bench",
                      outputs={out: art})
                for kind, out, art in (("data", "dataset", "dataset/preference"),
                                       ("tokenizer", "tokenizer", "tokenizer"),
                                       ("train", "model", "model"))]


# -- shared inputs ------------------------------------------------------------------------------
WORDS = ("the model answers questions about rivers mountains cities numbers colours animals "
         "music history science with care and a short clear reply when asked politely").split()


def make_pairs(n: int) -> list[dict[str, Any]]:
    import random

    rng = random.Random(0)
    pairs = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
        good = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18)))
        bad = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18)))
        pairs.append({"prompt": [{"role": "user", "content": f"Question {i}: {q}?"}],
                      "chosen": f"Gladly. {good}.", "rejected": f"No. {bad}!"})
    return pairs


def make_tokenizer(folder: Path, texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "artifact.json").write_text(json.dumps({"vocab_size": tok.get_vocab_size()}))
    return tok


def write_pairs(folder: Path, pairs: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "train").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(pairs), folder / "train" / "shard-00000.parquet")
    (folder / "artifact.json").write_text(json.dumps({
        "format": "preference", "splits": {"train": {"rows": len(pairs), "shards": 1}},
        "columns": ["prompt", "chosen", "rejected"]}))


# -- the two runs -------------------------------------------------------------------------------
def run_lmforge(root: Path, args: argparse.Namespace) -> list[float]:
    import lmforge_align.plugin as align
    import lmforge_models.plugin as models
    import lmforge_torch.plugin as torch_plugin
    from lmforge.testing import plugin_manager, run_spec
    from lmforge.training import loop as loop_mod

    times: list[float] = []
    orig = loop_mod.Trainer.train_step

    def timed(self: Any) -> dict[str, float]:
        t = time.perf_counter()
        out = orig(self)
        times.append(time.perf_counter() - t)
        return out

    loop_mod.Trainer.train_step = timed  # type: ignore[method-assign]
    try:
        spec = {"name": "bench", "seed": 0, "stages": [
            {"id": "pairs", "kind": "data", "plugin": "folder",
             "config": {"path": str(root / "pairs")}},
            {"id": "bpe", "kind": "tokenizer", "plugin": "folder",
             "config": {"path": str(root / "tokenizer")}},
            {"id": "sft", "kind": "train", "plugin": "folder",
             "config": {"path": str(root / "model")}},
            {"id": "dpo", "kind": "align", "plugin": "dpo",
             "inputs": {"dataset": "pairs", "tokenizer": "bpe", "init": "sft"},
             "config": {"beta": 0.1, "eval_batches": 0, "loop": {
                 "steps": args.steps, "batch_size": args.batch, "seq_len": args.seq_len,
                 "log_every": args.steps, "checkpoint_every": args.steps + 1,
                 "optim": {"lr": 1e-5, "warmup_steps": 0, "weight_decay": 0.0,
                           "grad_clip": 1.0},
                 "backend": {"type": "local", "device": "cpu", "precision": "fp32"}}}}]}
        pm = plugin_manager(BenchPlugin(), align, models, torch_plugin)
        run_spec(spec, pm, root / "run")
    finally:
        loop_mod.Trainer.train_step = orig  # type: ignore[method-assign]
    return times


def run_trl(root: Path, args: argparse.Namespace, model_sd: dict, hf_config: dict,
            pairs: list[dict[str, Any]], tok: Any) -> list[float]:
    import datasets
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        TrainerCallback,
    )
    from trl import DPOConfig, DPOTrainer

    cfg = {k: v for k, v in hf_config.items() if k not in ("architectures", "model_type",
                                                           "torch_dtype")}
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    missing, unexpected = model.load_state_dict(model_sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END, pad_token=PAD)
    rows = [{"prompt": render(p["prompt"], add_generation_prompt=True)[0],
             "chosen": p["chosen"] + END, "rejected": p["rejected"] + END} for p in pairs]
    train = datasets.Dataset.from_list(rows)

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.t)

    config = DPOConfig(
        output_dir=str(root / "trl"), per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=1e-5,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        beta=0.1, loss_type=["sigmoid"], max_length=args.seq_len + 1,
        precompute_ref_log_probs=True, precompute_ref_batch_size=args.batch,
        use_cpu=True, bf16=False, fp16=False, save_strategy="no", report_to=[],
        gradient_checkpointing=False, activation_checkpointing=False,  # TRL defaults to True
        logging_steps=args.steps, dataloader_num_workers=0, disable_dropout=True, seed=0)
    trainer = DPOTrainer(model=model, ref_model=None, args=config, train_dataset=train,
                         processing_class=hf_tok, callbacks=[Timer()])
    trainer.train()
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the median")
    ap.add_argument("--batch", type=int, default=8, help="pairs per step")
    ap.add_argument("--pairs", type=int, default=160)
    ap.add_argument("--seq-len", type=int, default=127)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    args = ap.parse_args(argv)

    import torch

    from lmforge.modelio import save_model
    from lmforge_models.config import DenseConfig
    from lmforge_models.dense import build

    root = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    try:
        pairs = make_pairs(args.pairs)
        texts = [render(p["prompt"], True)[0] + p["chosen"] + p["rejected"] for p in pairs]
        tok = make_tokenizer(root / "tokenizer", texts, args.vocab)
        write_pairs(root / "pairs", pairs)
        arch = DenseConfig(dim=args.dim, n_layers=args.layers, n_heads=4, multiple_of=32,
                           max_seq_len=args.seq_len + 1)
        torch.manual_seed(0)
        model = build(arch, tok.get_vocab_size())
        save_model(root / "model", model.state_dict(), arch, tok.get_vocab_size())
        hf_sd, hf_cfg = arch.to_hf(model.state_dict()), arch.hf_config(tok.get_vocab_size())
        n_params = sum(p.numel() for p in model.parameters())
        del model

        ours = run_lmforge(root, args)
        theirs = run_trl(root, args, hf_sd, hf_cfg, pairs, tok)
        import trl

        a = statistics.median(ours[args.warmup:])
        b = statistics.median(theirs[args.warmup:])
        print(f"model: dense dim={args.dim} layers={args.layers} ({n_params:,} params), "
              f"vocab {tok.get_vocab_size()}, {args.batch} pairs/step, fp32 CPU, "
              f"{torch.get_num_threads()} threads")
        print(f"lmforge dpo   : {a * 1000:8.1f} ms/step (median of {len(ours) - args.warmup})")
        print(f"TRL {trl.__version__:9s} : {b * 1000:8.1f} ms/step (median of "
              f"{len(theirs) - args.warmup})")
        print(f"ratio TRL / lmforge = {b / a:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
