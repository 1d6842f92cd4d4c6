"""The ``vllm`` generator: vLLM's ``LLM`` engine behind :class:`lmforge.generators.Generator`.

vLLM loads Hugging Face folders. A ``model`` artifact already holds HF-named safetensors, so
the engine gets a *view* of it in a temporary folder: ``config.json`` from the architecture's
``hf_config`` (with the tokenizer's special token ids), symbolic links to the artifact's weight
files, and the tokenizer artifact's ``tokenizer.json`` / ``tokenizer_config.json`` /
``special_tokens_map.json``. A folder that already has a ``config.json`` (an ``export/hf``
output) is used as it is.

Sampling maps one to one: ``temperature`` (0: greedy), ``top_k`` (0: all), ``top_p``, ``n``,
``max_new_tokens`` -> ``max_tokens``, ``stop_ids`` -> ``stop_token_ids``, ``seed``; per-token
log-probs come from vLLM's ``logprobs`` (its ``logprobs_mode`` decides whether they are taken
before or after temperature: see docs/plugins/generation.md). A ``stop_check`` is applied to the
finished completions (vLLM runs a whole request in its own loop).

vLLM is imported when the generator is built, never at registration.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lmforge import StageInputError
from lmforge.generation import Completion, SamplingParams, StopCheck
from lmforge_generators.config import VLLMGeneratorConfig

INSTALL_HINT = ("the vllm generator needs vLLM, which is not installed: `pip install vllm` (on "
                "a machine with a CUDA GPU), or use `generator: {type: builtin}`")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def import_vllm() -> Any:
    """The ``vllm`` module, or an ``ImportError`` that says how to install it."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    return vllm


def hf_view(model_dir: Path, tokenizer: Any, plugins: Any, into: Path) -> Path:
    """A folder vLLM (or transformers) can load for the model artifact ``model_dir``: written
    into ``into`` (see the module docstring); ``model_dir`` itself when it has a
    ``config.json``."""
    from lmforge.modelio import architecture_config, read_model_json, weight_files

    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file():
        return model_dir
    arch = architecture_config(model_dir, plugins)
    if not callable(getattr(arch, "hf_config", None)):
        raise StageInputError(f"architecture {arch.type!r} of {model_dir} has no Hugging Face "  # type: ignore[attr-defined]
                              f"counterpart (no hf_config()), so vLLM cannot load it; use the "
                              f"builtin generator")
    vocab = int(read_model_json(model_dir)["vocab_size"])
    config = dict(arch.hf_config(vocab))
    config.update(eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
                  bos_token_id=tokenizer.eos_id)
    into.mkdir(parents=True, exist_ok=True)
    (into / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in weight_files(model_dir):
        (into / f.name).symlink_to(f.resolve())
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        (into / index.name).symlink_to(index.resolve())
    for name in TOKENIZER_FILES:
        src = Path(tokenizer.path) / name
        if src.is_file():
            shutil.copyfile(src, into / name)
    return into


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for ``params``."""
    return {"n": params.n, "temperature": params.temperature, "top_p": params.top_p,
            "top_k": params.top_k if params.top_k > 0 else -1,
            "max_tokens": params.max_new_tokens, "stop_token_ids": list(params.stop_ids),
            "seed": params.seed, "logprobs": params.top_logprobs,
            "skip_special_tokens": False}


def completions_from_outputs(outputs: Iterable[Any], params: SamplingParams,
                             stop_check: StopCheck | None = None) -> list[Completion]:
    """Map vLLM ``RequestOutput`` objects (one per prompt, in prompt order; each with
    ``outputs``: ``CompletionOutput`` with ``index``, ``token_ids``, ``logprobs`` (per token a
    dict token id -> object with ``logprob`` and ``rank``), ``finish_reason``) to
    :class:`Completion` records in (prompt, sample) order. A stop token vLLM kept at the end
    of ``token_ids`` is removed and reported as ``stop_id``."""
    stops = set(params.stop_ids)
    out: list[Completion] = []
    for i, request in enumerate(outputs):
        samples = sorted(request.outputs, key=lambda o: o.index)
        if len(samples) != params.n:
            raise RuntimeError(f"vLLM returned {len(samples)} completions for prompt {i}, "
                               f"expected n={params.n}")
        for sample in samples:
            ids = [int(t) for t in sample.token_ids]
            per_token = list(sample.logprobs or [])
            if len(per_token) != len(ids):
                raise RuntimeError(f"vLLM returned {len(per_token)} log-prob entries for "
                                   f"{len(ids)} tokens (prompt {i}); it must be asked for "
                                   f"logprobs")
            reason = sample.finish_reason
            if reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM ended prompt {i} with finish_reason {reason!r}")
            c = Completion(i, int(sample.index), finish_reason=reason)
            if reason == "stop" and ids and ids[-1] in stops:
                c.stop_id = ids.pop()
                per_token.pop()
            c.token_ids = ids
            c.logprobs = [float(d[t].logprob) for t, d in zip(ids, per_token, strict=True)]
            if params.top_logprobs:
                c.top_logprobs = [
                    sorted(((int(k), float(v.logprob)) for k, v in d.items()),
                           key=lambda kv: -kv[1])[:params.top_logprobs] for d in per_token]
            if c.finish_reason == "length" and stop_check is not None and \
                    stop_check(len(out), c.token_ids):
                c.finish_reason = "stop"
            out.append(c)
    return out


class VLLMGenerator:
    """A :class:`lmforge.generators.Generator` on vLLM (see the module docstring)."""

    def __init__(self, config: VLLMGeneratorConfig, model_dir: Path, tokenizer: Any,
                 plugins: Any) -> None:
        vllm = import_vllm()
        self.config = config
        self._tmp = Path(tempfile.mkdtemp(prefix="lmforge-vllm-"))
        try:
            folder = hf_view(Path(model_dir), tokenizer, plugins, self._tmp / "model")
            hf = json.loads((folder / "config.json").read_text())
            self.max_seq_len = int(config.max_model_len or hf["max_position_embeddings"])
            self.llm = vllm.LLM(model=str(folder), tokenizer=str(folder), dtype=config.dtype,
                                gpu_memory_utilization=config.gpu_memory_utilization,
                                tensor_parallel_size=config.tensor_parallel_size,
                                max_model_len=self.max_seq_len,
                                enforce_eager=config.enforce_eager, seed=config.seed)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self._vllm = vllm
        self.label = f"vllm {vllm.__version__}: {model_dir}"

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 stop_check: StopCheck | None = None) -> list[Completion]:
        from vllm.inputs import TokensPrompt

        sp = self._vllm.SamplingParams(**sampling_kwargs(params))
        # logprobs=0 still returns the sampled token's log-prob, which Completion needs
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                                    sp, use_tqdm=False)
        return completions_from_outputs(outputs, params, stop_check)

    def describe(self) -> str:
        return self.label

    def close(self) -> None:
        self.llm = None
        shutil.rmtree(self._tmp, ignore_errors=True)
