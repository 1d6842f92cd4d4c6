"""The ``multiple-choice`` evaluator: pick the choice with the highest log-likelihood.

For each question the context ``prompt_template.format(question=...)`` and each continuation
``choice_template.format(choice=...)`` are tokenized separately and concatenated, and the
continuation's tokens are scored. ``accuracy`` takes the argmax of the summed log-prob;
``accuracy_norm`` the argmax of log-prob per character (or per token, ``normalize: tokens``) of
the continuation, which removes the bias towards short choices. ``chance`` is the mean of
``1 / len(choices)``.

Rows come from a JSONL file (``path``; errors name ``file:line``) or the ``choices`` input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lmforge import Artifact, StageInputError
from lmforge.evaluation import EvalContext, Evaluator, need_examples
from lmforge_eval.batching import example, sequence_scores
from lmforge_eval.data import iter_rows

Question = tuple[str, list[str], int]


def validate_row(row: Any, where: str) -> Question:
    """``(question, choices, answer)`` of one row, or a :class:`StageInputError` naming ``where``."""
    fix = "each row needs {question: str, choices: [str, ...] (at least 2), answer: int index}"
    if not isinstance(row, dict):
        raise StageInputError(f"{where}: expected an object, got {type(row).__name__}; {fix}")
    missing = [k for k in ("question", "choices", "answer") if k not in row or row[k] is None]
    if missing:
        raise StageInputError(f"{where}: missing field(s) {missing}; {fix}")
    question, choices, answer = row["question"], row["choices"], row["answer"]
    if not isinstance(question, str) or not question:
        raise StageInputError(f"{where}: 'question' must be a non-empty string; {fix}")
    if not isinstance(choices, list) or len(choices) < 2 or \
            not all(isinstance(c, str) and c for c in choices):
        raise StageInputError(f"{where}: 'choices' must be a list of at least 2 non-empty "
                              f"strings, got {choices!r:.100}; {fix}")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise StageInputError(f"{where}: 'answer' must be an integer index, got {answer!r}; {fix}")
    if not 0 <= answer < len(choices):
        raise StageInputError(f"{where}: 'answer' {answer} is out of range for "
                              f"{len(choices)} choices (valid: 0..{len(choices) - 1})")
    return question, list(choices), answer


def read_jsonl(path: Path, limit: int | None = None) -> Iterator[Question]:
    """Validated questions of a JSONL task file (blank lines skipped)."""
    if not path.is_file():
        raise StageInputError(f"multiple-choice task file {path} does not exist; set 'path' to a "
                              f"JSONL file of {{question, choices, answer}} rows")
    n = 0
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if limit is not None and n >= limit:
                return
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StageInputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            yield validate_row(row, f"{path}:{lineno}")
            n += 1


class MultipleChoice(Evaluator):
    """Config: :class:`lmforge_eval.config.MultipleChoiceConfig`."""

    def requires(self) -> dict[str, str]:
        return {} if self.config.path else {"choices": "dataset/multiple-choice"}

    def check(self, inputs: Mapping[str, Artifact]) -> None:
        if self.config.path:
            for _ in read_jsonl(Path(self.config.path)):
                pass
        else:
            super().check(inputs)

    def questions(self, inputs: Mapping[str, Artifact], limit: int | None) -> Iterator[Question]:
        if self.config.path:
            yield from read_jsonl(Path(self.config.path), limit)
            return
        art = inputs["choices"]
        for row, where in iter_rows(art.path, self.config.split, ["question", "choices", "answer"],
                                    limit):
            yield validate_row(row, where)

    def source(self, inputs: Mapping[str, Artifact]) -> str:
        return self.config.path or str(inputs["choices"].path)

    def run(self, model: Any, tokenizer: Any, inputs: Mapping[str, Artifact], device: Any,
            ctx: EvalContext) -> dict[str, Any]:
        cfg = self.config
        max_len = model.max_seq_len
        examples, units, groups = [], [], []
        for question, choices, answer in self.questions(inputs, ctx.max_examples):
            context = tokenizer.encode(cfg.prompt_template.format(question=question))
            first = len(examples)
            for choice in choices:
                text = cfg.choice_template.format(choice=choice)
                cont = tokenizer.encode(text)
                ids = (context + cont)[-(max_len + 1):]
                scored = ([False] * len(context) + [True] * len(cont))[-(max_len + 1):]
                examples.append(example(ids, scored))
                units.append(len(text) if cfg.normalize == "chars" else len(cont))
            groups.append((first, len(choices), answer))
        need_examples(len(groups), "questions", self.source(inputs))
        scores = sequence_scores(model, examples, tokenizer.pad_id, device, ctx.batch_size)
        correct = correct_norm = 0
        chance = 0.0
        for first, n, answer in groups:
            s = scores[first:first + n]
            norm = [v / max(u, 1) for v, u in zip(s, units[first:first + n])]
            correct += int(max(range(n), key=s.__getitem__) == answer)
            correct_norm += int(max(range(n), key=norm.__getitem__) == answer)
            chance += 1.0 / n
        q = len(groups)
        return {"accuracy": correct / q, "accuracy_norm": correct_norm / q, "chance": chance / q,
                "questions": q}
