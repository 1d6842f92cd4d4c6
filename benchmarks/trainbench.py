"""Shared set-up of the fine-tuning benchmarks (``bench_dpo.py``, ``bench_sft.py``): one model,
tokenizer and set of conversations given to lmforge's stage and to TRL's trainer alike.

* text: Python standard-library source (no download), cut into snippets;
* tokenizer: a byte-level BPE of ``--vocab`` tokens (default 8192) with lmforge's chat tokens,
  trained on that text, used by both sides (TRL through ``PreTrainedTokenizerFast`` with
  lmforge's chat template, ``lmforge.chat.jinja_template``);
* model: the pre-training benchmark's 7.6M-parameter ``dense`` model (dim 256, 4 layers, 8 heads,
  SwiGLU 768, vocab 8192, untied), saved as an lmforge model artifact; TRL gets the same weights
  as ``LlamaForCausalLM`` (``to_hf``);
* examples are cut so that every row fits ``--seq`` tokens (default 256) without truncation on
  either side.

lmforge runs the real stage through :func:`lmforge.testing.run_spec` with an in-file plugin that
publishes the prepared folders as artifacts; its step times come from wrapping
``Trainer.train_step``. TRL's come from a ``TrainerCallback`` (``on_step_begin`` to
``on_step_end``). Runs alternate (lmforge, TRL, lmforge, TRL, ...) and the first
``--warmup`` steps of each run are left out of the median.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lmforge import Component, Config, Stage, hookimpl, stage
from lmforge.chat import END, PAD, SPECIAL_TOKENS

DIM, LAYERS, HEADS = 256, 4, 8


# -- an in-file plugin publishing prepared folders as artifacts ----------------------------------
class FolderConfig(Config):
    path: str = Field(description="Folder to publish.")
    format: Literal["preference", "chat"] = Field(default="chat", description="Dataset format.")


class CopyStage(Stage):
    def run(self) -> dict[str, Any]:
        (name,) = self.ctx.output_kinds
        shutil.copytree(self.config.path, self.ctx.output_dir(name), dirs_exist_ok=True)
        return {}


class BenchPlugin:
    @hookimpl
    def lmforge_components(self) -> Sequence[Component]:
        return [
            stage("data", "folder", config=FolderConfig, factory=CopyStage, description="bench",
                  outputs=lambda c: {"dataset": f"dataset/{c.format}"}),
            stage("tokenizer", "folder", config=FolderConfig, factory=CopyStage,
                  description="bench", outputs={"tokenizer": "tokenizer"}),
            stage("train", "folder", config=FolderConfig, factory=CopyStage, description="bench",
                  outputs={"model": "model"}),
        ]


# -- inputs --------------------------------------------------------------------------------------
def stdlib_snippets(n_chars: int, limit: int = 4000) -> list[str]:
    """Up to ``limit`` snippets of about ``n_chars`` characters from the stdlib's ``.py`` files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for i in range(0, len(text) - n_chars, n_chars):
            out.append(text[i:i + n_chars])
            if len(out) >= limit:
                return out
    return out


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


def fit(tok: Any, text: str, max_tokens: int) -> str:
    """``text`` cut (at a token boundary) to at most ``max_tokens`` tokens."""
    enc = tok.encode(text, add_special_tokens=False)
    if len(enc.ids) <= max_tokens:
        return text
    return text[:enc.offsets[max_tokens - 1][1]]


def write_rows(folder: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "train").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "train" / "shard-00000.parquet")
    (folder / "artifact.json").write_text(json.dumps({
        "format": fmt, "splits": {"train": {"rows": len(rows), "shards": 1}},
        "columns": list(rows[0])}))


def make_model(root: Path, vocab: int, seq: int) -> tuple[dict, dict, int, int]:
    """The 7.6M model saved under ``root / "model"``; ``(hf_state_dict, hf_config, n_params,
    flops_per_token at seq)``."""
    import torch

    from lmforge.modelio import save_model
    from lmforge_models.config import DenseConfig
    from lmforge_models.dense import build

    arch = DenseConfig(dim=DIM, n_layers=LAYERS, n_heads=HEADS, max_seq_len=seq)
    torch.manual_seed(0)
    model = build(arch, vocab)
    save_model(root / "model", model.state_dict(), arch, vocab)
    n = sum(p.numel() for p in model.parameters())
    return (arch.to_hf(model.state_dict()), arch.hf_config(vocab), n,
            arch.flops_per_token(seq, vocab))


def matmul_probe(vocab: int, tokens: int) -> Any:
    """A :class:`benchlib.MatmulProbe` at this model's shapes for ``tokens`` rows."""
    from benchlib import MatmulProbe, model_matmul_shapes

    return MatmulProbe(model_matmul_shapes(tokens, DIM, 768, vocab, DIM, DIM))


def hf_model(state_dict: dict, hf_config: dict) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {k: v for k, v in hf_config.items() if k not in ("architectures", "model_type",
                                                           "torch_dtype")}
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return model


def hf_tokenizer(tok: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    from lmforge.chat import jinja_template

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END, pad_token=PAD)
    hf.chat_template = jinja_template()
    return hf


# -- timing --------------------------------------------------------------------------------------
def run_lmforge(root: Path, spec: dict[str, Any], run: int) -> list[float]:
    """Run ``spec`` (fresh run folder); the wall time of each optimizer step."""
    import lmforge_align.plugin as align
    import lmforge_models.plugin as models
    import lmforge_torch.plugin as torch_plugin
    import lmforge_train.plugin as train
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
        pm = plugin_manager(BenchPlugin(), align, models, torch_plugin, train)
        run_spec(spec, pm, root / f"run{run}")
    finally:
        loop_mod.Trainer.train_step = orig  # type: ignore[method-assign]
    shutil.rmtree(root / f"run{run}", ignore_errors=True)
    return times


def step_timer(times: list[float]) -> Any:
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.t)

    return Timer()


def alternate(runs: dict[str, Callable[[int], list[float]]], rounds: int, warmup: int,
              between: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Each run in turn, ``rounds`` times; step times after ``warmup`` steps of each run.
    ``between`` (e.g. a :class:`benchlib.MatmulProbe`) is called before every run."""
    out: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for name, fn in runs.items():
            if between is not None:
                between()
            t = time.perf_counter()
            steps = fn(r)
            out[name] += steps[warmup:]
            print(f"  round {r + 1} {name}: {len(steps)} steps, median "
                  f"{statistics.median(steps[warmup:]) * 1000:.0f} ms/step "
                  f"(run {time.perf_counter() - t:.0f}s)", flush=True)
    return out
