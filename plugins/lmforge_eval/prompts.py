"""Problems of a ``dataset/prompt`` input and their generation, shared by the ``pass-at-k`` and
``exact-match`` evaluators."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lmforge import Artifact
from lmforge.chat import END, encode_chat, validate_messages
from lmforge.evaluation import EvalContext, need_examples
from lmforge_eval.data import iter_rows


@dataclass
class Problem:
    """One row of a ``dataset/prompt`` split."""

    prompt: list[dict[str, str]]
    reference: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def read_problems(inputs: Mapping[str, Artifact], split: str, limit: int | None,
                  need: tuple[str, ...] = ()) -> list[Problem]:
    """The first ``limit`` rows of ``split`` of the ``prompts`` input; rows lacking a field in
    ``need`` (e.g. ``tests``) are an error naming the row."""
    art = inputs["prompts"]
    import pyarrow.parquet as pq

    from lmforge import StageInputError
    from lmforge.datasetio import split_files

    names = pq.ParquetFile(split_files(art.path, split)[0]).schema_arrow.names
    columns = ["prompt"] + [c for c in ("reference", "tests", "entry_point") if c in names]
    for col in need:
        if col not in columns:
            raise StageInputError(f"split {split!r} of {art.path} has no {col!r} column (it has "
                                  f"{names}); this evaluator needs it")
    out = []
    for row, where in iter_rows(art.path, split, columns, limit):
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        prompt = validate_messages(prompt, where + " ('prompt')", need_assistant=False)
        for col in need:
            if not row.get(col):
                raise StageInputError(f"{where}: {col!r} is empty; this evaluator needs it")
        out.append(Problem(prompt, row.get("reference"), row.get("tests"),
                           row.get("entry_point"), where))
    need_examples(len(out), "prompts", f"split {split!r} of {art.path}")
    return out


def sample_completions(model: Any, tokenizer: Any, problems: list[Problem], device: Any,
                       ctx: EvalContext, *, n: int, temperature: float, top_p: float,
                       top_k: int, max_new_tokens: int, seed: int) -> list[list[str]]:
    """``n`` completions (text, stop token excluded) per problem, through
    :func:`lmforge.generation.generate` with the chat template."""
    from lmforge.generation import SamplingParams, generate

    stop = tuple(t for t in (tokenizer.eos_id, tokenizer.tokenizer.token_to_id(END))
                 if t is not None)
    encoded = [encode_chat(tokenizer.tokenizer, p.prompt, add_generation_prompt=True)[0]
               for p in problems]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, n=n, stop_ids=stop, seed=seed)
    with ctx.progress(None, f"generating {len(problems)} x {n}", unit="batch"):
        done = generate(model, encoded, params, pad_id=tokenizer.pad_id, device=device,
                        batch_size=ctx.batch_size)
    out: list[list[str]] = [[] for _ in problems]
    for c in done:
        out[c.prompt_index].append(tokenizer.decode(c.token_ids))
    return out
