"""lm-evaluation-harness interop on local tasks (tests/generation/lmeval_tasks):

* ``lm_eval`` with ``--model hf`` (``simple_evaluate(model="hf")``, the same code the CLI runs)
  on the ``export/hf`` output gives the accuracy of lmforge's ``multiple-choice`` evaluator on
  the same questions, and so does lmforge's ``lm-eval`` evaluator inside ``evaluate/suite``;
* the adapter's per-request log-likelihoods (multiple choice and rolling) equal the ``hf``
  model's within 1e-4, with the same is-greedy flags;
* ``generate_until`` is the generation service's greedy text cut at the ``until`` string.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pytest
import torch
from pydantic import Field

import lmforge_eval.plugin as eval_plugin
import lmforge_export.plugin as export_plugin
import lmforge_lmeval.plugin as lmeval_plugin
import lmforge_models.plugin as models_plugin
import lmforge_torch.plugin as torch_plugin
from lmforge import Component, Config, Stage, hookimpl, stage
from lmforge.chat import END, load_tokenizer
from lmforge.generation import SamplingParams, generate
from lmforge.modelio import load_model
from lmforge.testing import plugin_manager, run_spec

lm_eval = pytest.importorskip("lm_eval", reason="the test extra installs lm-eval")

TASKS = Path(__file__).parent / "lmeval_tasks"
pytestmark = pytest.mark.slow


class PublishConfig(Config):
    path: str = Field(description="folder to publish")
    kind: Literal["model", "tokenizer"] = Field(description="artifact kind")


class Publish(Stage):
    def run(self) -> dict[str, Any]:
        shutil.copytree(self.config.path, self.ctx.output_dir("out"), dirs_exist_ok=True)
        return {}


class PublishPlugin:
    @hookimpl
    def lmforge_components(self) -> list[Component]:
        return [stage("data", "publish", config=PublishConfig, factory=Publish,
                      description="test fixture", outputs=lambda cfg: {"out": cfg.kind})]


def local_tasks(into: Path) -> Path:
    """The shipped task YAMLs with their data files made absolute."""
    into.mkdir(parents=True, exist_ok=True)
    for yaml_file in TASKS.glob("*.yaml"):
        text = yaml_file.read_text()
        for data in TASKS.glob("*.jsonl"):
            text = text.replace(f"test: {data.name}", f"test: {data}")
        (into / yaml_file.name).write_text(text)
    return into


@pytest.fixture(scope="module")
def setup(gen_artifacts: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    model_dir, tok_dir = gen_artifacts
    root = tmp_path_factory.mktemp("lmeval")
    tasks = local_tasks(root / "tasks")
    pm = plugin_manager(models_plugin, torch_plugin, eval_plugin, export_plugin, lmeval_plugin,
                        PublishPlugin())
    spec = {"name": "lmeval", "stages": [
        {"id": "m", "kind": "data", "plugin": "publish",
         "config": {"path": str(model_dir), "kind": "model"}},
        {"id": "tok", "kind": "data", "plugin": "publish",
         "config": {"path": str(tok_dir), "kind": "tokenizer"}},
        {"id": "export", "kind": "export", "plugin": "hf",
         "inputs": {"model": "m", "tokenizer": "tok"}},
        {"id": "ev", "kind": "evaluate", "plugin": "suite", "inputs": {"model": "m",
                                                                        "tokenizer": "tok"},
         "config": {"batch_size": 4, "backend": {"type": "local", "device": "cpu",
                                                 "precision": "fp32"},
                    "evaluators": [
                        {"type": "multiple-choice", "path": str(TASKS / "mc_questions.jsonl")},
                        {"type": "lm-eval", "tasks": ["lmforge_mc", "lmforge_ppl"],
                         "include_path": str(tasks), "bootstrap_iters": 0}]}},
    ]}
    run_dir = root / "run"
    run_spec(spec, pm, run_dir)
    report = json.loads((run_dir / "ev" / "outputs" / "report" / "report.json").read_text())
    export_dir = run_dir / "export" / "outputs" / "hf_model"
    tm = lm_eval.tasks.TaskManager(include_path=str(tasks), include_defaults=False)
    hf = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(export_dir), "dtype": "float32"},
        device="cpu", batch_size=4, tasks=["lmforge_mc", "lmforge_ppl"], task_manager=tm,
        log_samples=True, bootstrap_iters=0)
    return SimpleNamespace(pm=pm, model_dir=model_dir, tok_dir=tok_dir, tasks=tasks,
                           report=report, hf=hf, tm=tm)


def test_lm_eval_hf_on_the_export_agrees_with_our_multiple_choice_evaluator(setup) -> None:
    ours = setup.report["evaluators"]["multiple-choice"]
    ours_lmeval = setup.report["evaluators"]["lm-eval"]
    hf_acc = setup.hf["results"]["lmforge_mc"]["acc,none"]
    assert ours["questions"] == 14
    assert hf_acc == pytest.approx(ours["accuracy"], abs=1e-12)
    assert ours_lmeval["lmforge_mc/acc"] == pytest.approx(hf_acc, abs=1e-12)
    assert ours_lmeval["lmforge_mc/acc_norm"] == pytest.approx(
        setup.hf["results"]["lmforge_mc"]["acc_norm,none"], abs=1e-12)
    assert ours_lmeval["lmforge_ppl/word_perplexity"] == pytest.approx(
        setup.hf["results"]["lmforge_ppl"]["word_perplexity,none"], rel=1e-4)


def test_adapter_loglikelihoods_equal_the_hf_model(setup) -> None:
    from lmforge_lmeval.adapter import LmforgeLM

    tok = load_tokenizer(setup.tok_dir)
    model = load_model(setup.model_dir, setup.pm).eval()
    with torch.inference_mode():
        ours = lm_eval.simple_evaluate(model=LmforgeLM(model, tok, "cpu", batch_size=3),
                                       tasks=["lmforge_mc", "lmforge_ppl"],
                                       task_manager=setup.tm, log_samples=True,
                                       bootstrap_iters=0)
    for task in ("lmforge_mc", "lmforge_ppl"):
        a = sorted(ours["samples"][task], key=lambda s: s["doc_id"])
        b = sorted(setup.hf["samples"][task], key=lambda s: s["doc_id"])
        assert len(a) == len(b) > 0
        for sa, sb in zip(a, b, strict=True):
            for ra, rb in zip(sa["resps"], sb["resps"], strict=True):
                if task == "lmforge_mc":
                    (lla, greedy_a), (llb, greedy_b) = ra[0], rb[0]
                    assert lla == pytest.approx(llb, abs=1e-4)
                    assert greedy_a == greedy_b
                else:
                    assert ra[0] == pytest.approx(rb[0], abs=1e-4)


def test_generate_until_is_the_service_cut_at_the_stop_string(setup) -> None:
    from lmforge_lmeval.adapter import LmforgeLM

    tok = load_tokenizer(setup.tok_dir)
    model = load_model(setup.model_dir, setup.pm).eval()
    lm = LmforgeLM(model, tok, "cpu", batch_size=2)
    stop = (tok.eos_id, tok.tokenizer.token_to_id(END))
    contexts = ["The quick", "cats sit on"]
    with torch.inference_mode():
        full = generate(model, [tok.encode(c) for c in contexts],
                        SamplingParams(max_new_tokens=10, temperature=0, stop_ids=stop),
                        pad_id=tok.pad_id, device="cpu")
        texts = [tok.decode(c.token_ids) for c in full]
        until = texts[0][3:5]
        got = lm.generate_until([SimpleNamespace(args=(c, {"until": [until], "max_gen_toks": 10}))
                                 for c in contexts])
    assert got == [t.split(until, 1)[0] for t in texts]
    assert got[0] == texts[0][:texts[0].index(until)]
