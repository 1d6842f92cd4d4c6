"""The mined multiple-choice quiz measures understanding, not familiarity (issue 8): a model
that ignores the question scores at chance, whatever names it has seen in training.

The quiz is mined from the standard library and split by file as the quickstart does it. A
question-blind scorer that prefers names defined in the training files (what a model that has
memorised them does) or avoids them, and a model with uniform logits run through the real
``multiple-choice`` evaluator, must all score within a binomial tolerance of chance."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

import lmforge_data.plugin
from lmforge.testing import plugin_manager, run_spec
from tests.data.helpers import curate_spec, read_split

STDLIB_FILES = "{stdlib}/*.py"


@pytest.fixture(scope="module")
def quiz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Held-out questions and the names defined in the training files."""
    import sysconfig

    root = tmp_path_factory.mktemp("quiz")
    pm = plugin_manager(lmforge_data.plugin)
    spec = curate_spec({"format": "multiple-choice", "split_by": "source",
                        "heldout_fraction": 0.3,
                        "sources": [{"type": "python-functions", "mode": "multiple-choice",
                                     "path": STDLIB_FILES}]}, "quiz")
    run_spec(spec, pm, root / "run")
    out = root / "run" / "quiz" / "outputs" / "dataset"
    heldout = read_split(out, "heldout")
    text = curate_spec({"split_by": "source", "heldout_fraction": 0.3, "dedup": False,
                        "sources": [{"type": "python-functions", "mode": "text",
                                     "path": STDLIB_FILES}]})
    run_spec(text, pm, root / "text")
    train_files = read_split(root / "text" / "corpus" / "outputs" / "dataset", "train")
    defined: dict[str, int] = {}
    for row in train_files:
        for name in re.findall(r"\bdef\s+(\w+)", row["text"]):
            defined[name] = defined.get(name, 0) + 1
    std = Path(sysconfig.get_path("stdlib"))
    return {"heldout": heldout, "defined": defined, "root": root, "dataset": out,
            "files": len(list(std.glob("*.py")))}


def _accuracy(rows: list[dict[str, Any]], score: Any) -> float:
    right = 0
    for r in rows:
        scores = [score(c) for c in r["choices"]]
        right += max(range(len(scores)), key=scores.__getitem__) == r["answer"]
    return right / len(rows)


def _assert_chance(acc: float, rows: list[dict[str, Any]], what: str) -> None:
    chance = sum(1 / len(r["choices"]) for r in rows) / len(rows)
    sd = math.sqrt(chance * (1 - chance) / len(rows))
    assert abs(acc - chance) <= 3.5 * sd, (f"{what}: accuracy {acc:.3f} on {len(rows)} questions, "
                                           f"chance {chance:.3f} (sd {sd:.3f})")


def test_held_out_questions_have_no_familiarity_bias(quiz: dict[str, Any]) -> None:
    rows, defined = quiz["heldout"], quiz["defined"]
    assert len(rows) > 300
    assert all(len(r["choices"]) == 4 and r["choices"][r["answer"]] for r in rows)
    _assert_chance(_accuracy(rows, lambda c: c in defined), rows,
                   "prefers names defined in training files")
    _assert_chance(_accuracy(rows, lambda c: c not in defined), rows,
                   "avoids names defined in training files")
    _assert_chance(_accuracy(rows, lambda c: defined.get(c, 0)), rows,
                   "prefers names defined often")
    _assert_chance(_accuracy(rows, lambda c: -len(c)), rows, "prefers short names")


def test_distractors_come_from_the_answers_file() -> None:
    """Every choice is a function of the answer's file (so of its split), and every function of
    a file with at least four names is asked about."""
    from collections import Counter

    from lmforge_data.sources.python_functions import functions_in, python_functions

    pm = plugin_manager(lmforge_data.plugin)
    config = pm.component_config_model("source", "python-functions")(
        type="python-functions", mode="multiple-choice", path="{stdlib}/email/*.py")
    source = python_functions(config)
    rows = list(source)
    asked: Counter[str] = Counter()
    for r in rows:
        path = r["_where"].rsplit(":", 1)[0]
        names = {f.name for f in functions_in(Path(path).read_text("utf-8"), path)}
        assert set(r["choices"]) <= names and len(set(r["choices"])) == 4, (path, r["choices"])
        asked[path] += 1
    for path in source.files():
        fns = list(functions_in(path.read_text("utf-8"), str(path)))
        if len({f.name for f in fns}) >= 4:
            assert asked[str(path)] == len(fns), path
        else:
            assert asked[str(path)] == 0, path
    assert len(asked) > 5


def test_a_model_with_uniform_logits_scores_at_chance(quiz: dict[str, Any]) -> None:
    """Through the real evaluator: a model that knows nothing (every token equally likely)."""
    import torch

    from lmforge.evaluation import EvalContext
    from lmforge.interfaces import CausalLMOutput
    from lmforge.stages import Artifact
    from lmforge.testing import write_tokenizer_artifact
    from lmforge_eval.config import MultipleChoiceConfig
    from lmforge_eval.multiple_choice import MultipleChoice

    rows = quiz["heldout"]
    texts = [" ".join(r["choices"]) + " " + r["question"] for r in rows]
    tok_dir = write_tokenizer_artifact(quiz["root"] / "tok", texts, vocab_size=600)

    from lmforge.chat import load_tokenizer
    tok = load_tokenizer(tok_dir)

    class Uniform(torch.nn.Module):
        max_seq_len = 256

        def forward(self, input_ids, *, labels=None, positions=None, attention_mask=None,
                    return_logprobs=False, logits_to_keep=None):
            logp = torch.full(input_ids.shape, -math.log(tok.vocab_size))
            if labels is not None and return_logprobs:
                return CausalLMOutput(token_logprobs=torch.where(labels != -100, logp, 0.0))
            raise NotImplementedError

    class Ctx:
        def progress(self, *a, **k):  # pragma: no cover - the evaluator shows none
            raise AssertionError

    art = Artifact(kind="dataset/multiple-choice", path=quiz["dataset"], hash="-",
                   stage_id="quiz")
    ev = MultipleChoice(MultipleChoiceConfig())
    result = ev.run(Uniform(), tok, {"choices": art}, "cpu",
                    EvalContext(stage=Ctx(), label="mc", batch_size=64, max_examples=None))
    assert result["questions"] == len(rows)
    _assert_chance(result["accuracy"], rows, "uniform logits, summed log-prob")
    _assert_chance(result["accuracy_norm"], rows, "uniform logits, per character")
