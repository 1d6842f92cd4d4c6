"""Coding problems mined from stdlib-style files (``python-functions`` mode ``prompt``), the
pass@k estimator, and the ``pass-at-k`` / ``exact-match`` evaluators."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from rewards_fixtures import PublishPlugin, save_lm

import lmforge_eval.plugin
import lmforge_models.plugin
import lmforge_rewards.plugin
import lmforge_torch.plugin
from lmforge.chat import load_tokenizer
from lmforge.evaluation import EvalContext
from lmforge.testing import plugin_manager, run_spec, write_dataset_artifact
from lmforge_data.sources.problems import problems_in, reference_passes
from lmforge_eval.pass_at_k import pass_at_k

MODULE = '''
import math
from collections import Counter


def hypot2(a, b):
    """Length of the hypotenuse.

    >>> hypot2(3, 4)
    5.0
    """
    return math.sqrt(a * a + b * b)


def top(words):
    """The most common word.

    >>> top(["a", "b", "a"])
    'a'
    """
    return Counter(words).most_common(1)[0][0]


def needs_helper(x):
    """Uses a module helper, so it cannot pass alone.

    >>> needs_helper(2)
    4
    """
    return _double(x)


def library_call(x):
    """Its example tests the library, not this function.

    >>> import math
    >>> math.floor(2.5)
    2
    """
    return x


def _double(x):
    return 2 * x


class K:
    def method(self):
        """>>> K().method()
        1
        """
        return 1
'''


def test_problems_are_mined_with_their_imports_and_checked():
    found = {p.name: p for p in problems_in(MODULE, "mod.py")}
    # methods, private functions and examples that never call the function are not problems
    assert sorted(found) == ["hypot2", "needs_helper", "top"]
    top = found["top"]
    assert top.reference.startswith("from collections import Counter\n\n\ndef top(words):")
    assert "import math" not in top.reference
    assert top.tests.splitlines()[0] == "The most common word."
    msg = top.prompt()[0]["content"]
    assert "`top`" in msg and "def top(words):" in msg and ">>> top(" in msg
    assert "return Counter" not in msg  # the body is the answer
    assert reference_passes(found["hypot2"]) and reference_passes(top)
    assert not reference_passes(found["needs_helper"])  # NameError: _double


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4),             # 1 - C(3,1)/C(5,1) = 1 - 3/5
    (5, 2, 2, 0.7),             # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (5, 2, 3, 0.9),             # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (5, 2, 4, 1.0),             # n - c < k: some draw of 4 always holds a correct one
    (5, 0, 3, 0.0),
    (10, 10, 10, 1.0),
    (200, 1, 100, 0.5),         # 1 - C(199,100)/C(200,100) = 1 - 100/200
])
def test_pass_at_k_estimator(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_is_stable_where_binomials_overflow_floats():
    # C(2000, 1000) ~ 1e600 overflows a float; the product form does not
    assert pass_at_k(2000, 3, 1000) == pytest.approx(1 - (1000 * 999 * 998) / (2000 * 1999 * 1998))
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


class _Stage:
    """The parts of a StageContext an evaluator uses."""

    def __init__(self, pm) -> None:
        self.plugins = pm
        self.inputs = {}

    def build(self, kind, config, *args, **kwargs):
        return self.plugins.get_component(kind, config.type).load_factory()(config, *args,
                                                                             **kwargs)

    def progress(self, total, description, unit="it"):
        class Bar:
            def advance(self, n=1, **kw):
                pass
        return contextlib.nullcontext(Bar())


CORRECT = "```python\nimport math\n\ndef hypot2(a, b):\n    return math.sqrt(a*a + b*b)\n```"
WRONG = "```python\ndef hypot2(a, b):\n    return a + b\n```"
LOOPS = "def hypot2(a, b):\n    while True:\n        pass\n"


def test_pass_at_k_evaluator_runs_the_samples(tmp_path, monkeypatch):
    """Generation replaced by fixed completions: problem 1 has 2 correct of 4 samples (one of
    them loops forever), problem 2 none."""
    import lmforge_eval.pass_at_k as mod

    found = {p.name: p for p in problems_in(MODULE, "mod.py")}
    rows = [{"prompt": found[n].prompt(), "tests": found[n].tests, "entry_point": n,
             "reference": found[n].reference} for n in ("hypot2", "top")]
    art = write_dataset_artifact(tmp_path / "p", "prompt", {"heldout": rows})
    monkeypatch.setattr(mod, "sample_completions", lambda *a, **k: [
        [CORRECT, WRONG, LOOPS, CORRECT], ["def top(words):\n    return sorted(words)[-1]\n"] * 4])
    pm = plugin_manager(lmforge_eval.plugin, lmforge_rewards.plugin)
    cfg = pm.component_config_model("evaluator", "pass-at-k")(
        type="pass-at-k", n=4, ks=[1, 2, 4], timeout_s=2)
    ev = mod.PassAtK(cfg)
    assert ev.requires() == {"prompts": "dataset/prompt"}

    class Art:
        path = art
    ctx = EvalContext(stage=_Stage(pm), label="pass-at-k", batch_size=4, max_examples=None)
    out = ev.run(None, None, {"prompts": Art}, "cpu", ctx)
    # problem 1: c = 2 of n = 4 -> pass@1 0.5, pass@2 1 - C(2,2)/C(4,2) = 5/6, pass@4 1
    assert out["pass@1"] == pytest.approx(0.25)
    assert out["pass@2"] == pytest.approx(5 / 12)
    assert out["pass@4"] == pytest.approx(0.5)
    assert out["problems"] == 2 and out["solved"] == 1 and out["runs_ended_by_a_limit"] == 1
    assert [r["correct"] for r in out["problems_detail"]] == [2, 0]


@pytest.mark.slow
def test_evaluators_in_a_suite_with_a_real_model(tmp_path, assets):
    """The suite wires the prompts input, generates with a (random) model, runs the tests in
    the sandbox and scores answers: the plumbing end to end."""
    tok = load_tokenizer(assets["tokenizer"])
    model = save_lm(tmp_path / "m", tok.vocab_size)
    found = {p.name: p for p in problems_in(MODULE, "mod.py")}
    rows = [{"prompt": found[n].prompt(), "tests": found[n].tests, "entry_point": n,
             "reference": "#### 5"} for n in ("hypot2", "top")]
    art = write_dataset_artifact(tmp_path / "p", "prompt", {"heldout": rows})
    pm = plugin_manager(lmforge_eval.plugin, lmforge_rewards.plugin, lmforge_models.plugin,
                        lmforge_torch.plugin, PublishPlugin())
    spec = {"name": "ev", "seed": 0, "stages": [
        {"id": "tok", "kind": "data", "plugin": "publish",
         "config": {"path": str(assets["tokenizer"]), "kind": "tokenizer"}},
        {"id": "m", "kind": "data", "plugin": "publish",
         "config": {"path": str(model), "kind": "model"}},
        {"id": "probs", "kind": "data", "plugin": "publish",
         "config": {"path": str(art), "kind": "dataset/prompt"}},
        {"id": "eval", "kind": "evaluate", "plugin": "suite",
         "inputs": {"model": "m", "tokenizer": "tok", "prompts": "probs"},
         "config": {"backend": {"type": "local", "device": "cpu", "precision": "fp32"},
                    "evaluators": [
                        {"type": "pass-at-k", "n": 2, "ks": [1, 2], "max_new_tokens": 8},
                        {"type": "exact-match", "max_new_tokens": 8}]}},
    ]}
    assert run_spec(spec, pm, tmp_path / "run").status == "complete"
    report = json.loads((tmp_path / "run" / "eval" / "outputs" / "report" / "report.json")
                        .read_text())
    pak, em = report["evaluators"]["pass-at-k"], report["evaluators"]["exact-match"]
    assert pak["problems"] == 2 and pak["samples_per_problem"] == 2
    assert pak["pass@1"] == 0.0  # eight random tokens are not a function
    assert em["problems"] == 2 and 0.0 <= em["accuracy"] <= 1.0
    assert len(em["answers"]) == 2 and em["answers"][0]["reference"] == "5"


def test_curate_writes_a_prompt_dataset_of_checked_problems(tmp_path):
    import lmforge_data.plugin

    src = tmp_path / "src"
    src.mkdir()
    (src / "mod.py").write_text(MODULE)
    pm = plugin_manager(lmforge_data.plugin)
    spec = {"name": "problems", "seed": 0, "stages": [
        {"id": "problems", "kind": "data", "plugin": "curate",
         "config": {"format": "prompt", "heldout_fraction": 0.0,
                    "sources": [{"type": "python-functions", "mode": "prompt",
                                 "path": str(src / "*.py")}]}}]}
    assert run_spec(spec, pm, tmp_path / "run").status == "complete"
    out = tmp_path / "run" / "problems" / "outputs" / "dataset"
    meta = json.loads((out / "artifact.json").read_text())
    assert meta["format"] == "prompt" and meta["columns"] == ["prompt", "reference", "tests",
                                                              "entry_point"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sources"][0]["skipped"] == {"reference_fails_its_doctests": 1}
    import pyarrow.parquet as pq

    rows = [r for f in sorted((out / "train").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    assert sorted(r["entry_point"] for r in rows) == ["hypot2", "top"]
    assert all(r["prompt"][0]["role"] == "user" and r["tests"] for r in rows)
