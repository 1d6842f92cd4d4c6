"""Helpers shared by the stages that train a model (pre-training, SFT, DPO ...).

Input checks that name the stage and the fix, the ``init`` model, the output model artifact and
an atomic on-disk cache of tokenised arrays (so a resumed stage does not tokenise again).
Imports numpy at module level; torch only inside functions.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.errors import StageInputError
from lmforge.fsutil import atomic_replace_dir, atomic_write_text

if TYPE_CHECKING:
    import torch

    from lmforge.chat import TokenizerArtifact
    from lmforge.components import Config
    from lmforge.modelio import ModelRecipe
    from lmforge.stages import StageContext


def load_tokenizer_input(ctx: StageContext, slot: str = "tokenizer") -> TokenizerArtifact:
    from lmforge.chat import load_tokenizer

    return load_tokenizer(ctx.input(slot).path)


def check_seq_len(ctx: StageContext, seq_len: int, max_seq_len: int | None, model_desc: str
                  ) -> None:
    """Refuse ``loop.seq_len`` longer than the model's ``max_seq_len``."""
    if max_seq_len is not None and seq_len > max_seq_len:
        raise StageInputError(
            f"stage {ctx.stage_id!r}: loop.seq_len ({seq_len}) is longer than the model's "
            f"max_seq_len ({max_seq_len}, {model_desc}); lower loop.seq_len to at most "
            f"{max_seq_len} or raise the architecture's max_seq_len")


def check_vocab(ctx: StageContext, tokenizer_vocab: int, model_vocab: int, where: str) -> None:
    if tokenizer_vocab > model_vocab:
        raise StageInputError(
            f"stage {ctx.stage_id!r}: the tokenizer ({ctx.input('tokenizer').path}) has "
            f"{tokenizer_vocab} tokens but the model ({where}) only {model_vocab}; use the "
            f"tokenizer the model was trained with")


def check_init_stage(ctx: StageContext, seq_len: int) -> None:
    """``check()`` of a stage that fine-tunes its ``init`` model: the dataset has a train split,
    ``seq_len`` fits the init model, and the tokenizer fits its vocabulary (no weights loaded)."""
    from lmforge.datasetio import split_files

    split_files(ctx.input("dataset").path, "train")
    tok = load_tokenizer_input(ctx)
    arch, vocab, path = init_model_info(ctx)
    check_seq_len(ctx, seq_len, arch.get("max_seq_len"), f"init model {path}")
    check_vocab(ctx, tok.vocab_size, vocab, str(path))


def heldout_metrics(ctx: StageContext, backend: Any, module: torch.nn.Module, loss_fn: Any,
                    batches: Any, step: int, count_name: str) -> dict[str, float | int]:
    """Evaluate ``loss_fn`` over ``batches`` of the held-out split and log it at ``step``:
    ``heldout/loss``, ``heldout/perplexity`` and ``heldout/<count_name>``."""
    import math

    from lmforge.training.loop import evaluate

    ev = evaluate(module, loss_fn, batches, backend)
    metrics: dict[str, float | int] = {
        "heldout/loss": ev["loss"], "heldout/perplexity": math.exp(min(ev["loss"], 50.0)),
        f"heldout/{count_name}": int(ev["count"])}
    ctx.log(step, metrics)
    return metrics


def finish_training(ctx: StageContext, trainer: Any, meta: Mapping[str, Any] | None = None
                    ) -> None:
    """Gather the trained model (collective) and save it as the stage's ``model`` output on the
    main rank, then release the backend."""
    finish_training_model(ctx, trainer.backend, trainer.module, trainer.recipe,
                          {"tokens_seen": trainer.tokens_seen, "steps": trainer.step,
                           **dict(meta or {})})


def finish_training_model(ctx: StageContext, backend: Any, module: torch.nn.Module,
                          recipe: ModelRecipe, meta: Mapping[str, Any] | None = None) -> None:
    """Gather ``module`` (built by ``backend`` from ``recipe``; collective) and save it as the
    stage's ``model`` output on the main rank with ``meta``, then release the backend."""
    state = backend.full_state_dict(module)  # collective; None off the main rank
    save_model_output(ctx, state, recipe.architecture, recipe.vocab_size, meta)
    backend.barrier()
    backend.close()


def init_model_info(ctx: StageContext, slot: str = "init") -> tuple[dict[str, Any], int, Path]:
    """``(architecture dict, vocab_size, path)`` of the ``init`` model, read from model.json
    (cheap: no weights loaded)."""
    from lmforge.modelio import read_model_json

    art = ctx.input(slot)
    meta = read_model_json(art.path)
    return dict(meta["architecture"]), int(meta["vocab_size"]), art.path


def init_recipe(ctx: StageContext, slot: str = "init") -> ModelRecipe:
    """What to build for a stage that starts from its ``init`` model artifact."""
    from lmforge.modelio import ModelRecipe

    return ModelRecipe.from_artifact(ctx.input(slot).path, ctx.plugins, seed=ctx.seed)


def save_model_output(ctx: StageContext, state: Mapping[str, torch.Tensor] | None,
                      architecture: Config,
                      vocab_size: int, meta: Mapping[str, Any] | None = None,
                      name: str = "model") -> None:
    """Write the ``model`` artifact (HF-named weights, model.json, artifact.json with
    ``meta``) from a full state dict under the architecture's names. Main rank only: on other
    ranks (where ``state`` may be None) it does nothing, so callers need not check."""
    from lmforge.modelio import save_model

    if not ctx.is_main:
        return
    out = ctx.output_dir(name)
    save_model(out, state, architecture, vocab_size)
    n_params = architecture.num_parameters(vocab_size) if hasattr(
        architecture, "num_parameters") else sum(t.numel() for t in state.values())
    ctx.write_artifact_meta(name, {"architecture": architecture.model_dump(mode="json"),
                                   "vocab_size": int(vocab_size), "parameters": int(n_params),
                                   "stage": ctx.stage_id, **dict(meta or {})})


def cached_arrays(folder: Path, build: Callable[[Path], Mapping[str, Any]]
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays cached in ``folder`` (``<name>.npy`` + ``meta.json``), built once.

    ``build(tmp_dir)`` writes ``.npy`` files into ``tmp_dir`` and returns JSON-able meta; the
    folder is renamed into place only when complete, so an interruption never leaves a cache
    that looks finished. The size and sha256 of every array file are recorded in
    ``meta.json``; a cache whose files no longer match is reported and built again. Arrays come
    back memory-mapped read-only.
    """
    from lmforge.fsutil import file_hashes

    folder = Path(folder)
    problem = cache_problem(folder)
    if problem is not None:
        if problem != "missing":
            import warnings

            from lmforge.errors import IntegrityWarning

            warnings.warn(IntegrityWarning(f"cache {folder} is damaged ({problem}); building "
                                           f"it again"), stacklevel=2)
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        meta = dict(build(tmp))
        meta["_files"] = {rel: list(rec) for rel, rec in file_hashes(tmp).items()}
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2, sort_keys=True))
        atomic_replace_dir(tmp, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta.pop("_files", None)
    arrays = {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}
    return arrays, meta


def cache_problem(folder: Path) -> str | None:
    """Why the cache folder of :func:`cached_arrays` cannot be used (``"missing"``, damaged
    files), or None when it is complete and intact."""
    from lmforge.fsutil import file_hashes

    if not (Path(folder) / "meta.json").is_file():
        return "missing"
    try:
        recorded = json.loads((folder / "meta.json").read_text()).get("_files")
    except (OSError, ValueError) as exc:
        return f"meta.json is unreadable: {exc}"
    if recorded is None:
        return None  # written before hashes were recorded
    found = {rel: list(rec) for rel, rec in file_hashes(folder).items() if rel != "meta.json"}
    if found != recorded:
        changed = sorted(set(found) ^ set(recorded)) or sorted(
            r for r in found if found[r] != recorded.get(r))
        return f"{', '.join(changed[:3])} changed since it was written"
    return None


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def cache_key(*parts: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def upstream_estimate(config: Any, upstream: Mapping[str, Any], arch: Any | None) -> dict[str, Any]:
    """Light ``plan`` estimate of a training stage: parameters, tokens, training FLOPs.

    ``arch`` is an architecture config with ``num_parameters(vocab_size)`` (or None when
    unknown); the vocabulary comes from the upstream tokenizer stage's config if it has one.
    """
    loop = config.loop
    tokens = loop.steps * loop.batch_size * loop.grad_accum * loop.seq_len
    out: dict[str, Any] = {"tokens": tokens}
    tok_cfg = upstream.get("tokenizer")
    vocab = getattr(tok_cfg, "vocab_size", None)
    count = getattr(arch, "num_parameters", None)
    if vocab is not None and callable(count):
        n = int(count(vocab))
        out["parameters"] = n
        out["train FLOPs"] = 6 * n * tokens
    return out


def main_first(fn: Callable[[], Any]) -> Any:
    """Run a cache-building ``fn`` on the main rank first, then everywhere (where it only loads
    the finished cache), so ranks never write the same cache at once."""
    from lmforge import dist

    if dist.is_distributed():
        if dist.is_main():
            fn()
        dist.barrier()
    return fn()
