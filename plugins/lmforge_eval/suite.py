"""The ``evaluate/suite`` stage: load model and tokenizer once, run each evaluator, write a report.

``check()`` builds the evaluators and fails (naming evaluator and input) when an evaluator needs
an input that is not wired, a split is missing, a task file has a bad row, or the tokenizer's
vocabulary does not fit the model, all before the model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmforge import Stage, StageInputError
from lmforge.evaluation import EvalContext
from lmforge_eval.config import SuiteConfig
from lmforge_eval.report import metrics_of, write_report


class SuiteStage(Stage):
    """Stage ``evaluate/suite`` (inputs model, tokenizer, text, chat, preferences, choices;
    output ``report``)."""

    config: SuiteConfig

    def _evaluators(self) -> list[tuple[str, Any, Any]]:
        """``(label, config, evaluator)`` per configured evaluator; labels made unique."""
        out, seen = [], {}
        for cfg in self.config.evaluators:
            base = getattr(cfg, "name", None) or cfg.type
            seen[base] = seen.get(base, 0) + 1
            label = base if seen[base] == 1 else f"{base}-{seen[base]}"
            out.append((label, cfg, self.ctx.build("evaluator", cfg)))
        return out

    def check(self) -> None:
        from lmforge.modelio import read_model_json

        sid = self.ctx.stage_id
        tok_meta = self.ctx.input("tokenizer").meta
        tok_vocab = tok_meta.get("vocab_size")
        for slot in ("model", "baseline"):
            if slot not in self.ctx.inputs:
                continue
            model_meta = read_model_json(self.ctx.input(slot).path)
            if tok_vocab is not None and int(tok_vocab) > int(model_meta["vocab_size"]):
                raise StageInputError(f"stage {sid!r}: the tokenizer has {tok_vocab} tokens but "
                                      f"the {slot} model only {model_meta['vocab_size']}; wire "
                                      f"the tokenizer the model was trained with")
        for label, cfg, ev in self._evaluators():
            for name, kind in ev.requires().items():
                if name not in self.ctx.inputs:
                    alt = " (or set its 'path')" if cfg.type == "multiple-choice" else (
                        " (or set its 'prompts')" if cfg.type == "generate" else "")
                    raise StageInputError(
                        f"stage {sid!r}: evaluator {label!r} (type {cfg.type}) needs input "
                        f"{name!r} ({kind}), which is not wired; add '{name}: <stage id>' under "
                        f"the stage's inputs{alt}")
            try:
                ev.check(self.ctx.inputs)
            except StageInputError as exc:
                raise StageInputError(f"stage {sid!r}: evaluator {label!r}: {exc}") from None

    def _model(self, backend: Any, slot: str) -> tuple[Any, Any]:
        """The ``slot`` model built by the backend (placed, cast, sharded), in eval mode, and
        its recipe."""
        from lmforge.modelio import ModelRecipe

        recipe = ModelRecipe.from_artifact(self.ctx.input(slot).path, self.ctx.plugins)
        model = backend.build_model(recipe)
        model.eval()
        return model, recipe

    def run(self) -> Mapping[str, Any]:
        import torch

        from lmforge.chat import load_tokenizer

        backend = self.ctx.build("backend", self.config.backend)
        device = backend.device
        tokenizer = load_tokenizer(self.ctx.input("tokenizer").path)
        model, recipe = self._model(backend, "model")
        arch = recipe.architecture
        report: dict[str, Any] = {
            "stage": self.ctx.stage_id, "device": str(device), "backend": backend.describe(),
            "model": {"path": str(self.ctx.input("model").path), "hash": self.ctx.input("model").hash,
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "max_seq_len": int(arch.max_seq_len), "vocab_size": recipe.vocab_size},
            "tokenizer": {"path": str(tokenizer.path), "vocab_size": tokenizer.vocab_size},
            "inputs": {n: {"path": str(a.path), "hash": a.hash} for n, a in self.ctx.inputs.items()
                       if n not in ("model", "tokenizer")},
            "evaluators": {},
        }
        if self.config.note:
            report["note"] = self.config.note
        baseline = None
        if "baseline" in self.ctx.inputs:
            baseline, _ = self._model(backend, "baseline")
            report["baseline"] = {"path": str(self.ctx.input("baseline").path),
                                  "hash": self.ctx.input("baseline").hash}
            report["baseline_evaluators"] = {}
        sections: dict[str, str] = {}
        headline: dict[str, Any] = {}
        baseline_headline: dict[str, Any] = {}  # after the model's own metrics
        for step, (label, cfg, ev) in enumerate(self._evaluators()):
            def ectx(slot: str, label: str = label) -> EvalContext:
                # progress lines name the model: "<stage>: model sft: perplexity" vs
                # "<stage>: baseline pretrain: perplexity"
                return EvalContext(stage=self.ctx, label=label,
                                   batch_size=self.config.batch_size,
                                   max_examples=self.config.max_examples,
                                   model_label=f"{slot} {self.ctx.input(slot).stage_id}")

            with torch.inference_mode(), backend.autocast():
                result = dict(ev.run(model, tokenizer, self.ctx.inputs, device, ectx("model")))
            report["evaluators"][label] = {"type": cfg.type, **result}
            sections[label] = ev.markdown(result)
            metrics = {f"{label}/{k}": v for k, v in metrics_of(result).items()}
            headline.update(metrics)
            if baseline is not None and cfg.type != "generate":
                with torch.inference_mode(), backend.autocast():
                    base = dict(ev.run(baseline, tokenizer, self.ctx.inputs, device,
                                       ectx("baseline")))
                report["baseline_evaluators"][label] = {"type": cfg.type, **base}
                base_metrics = {f"baseline/{label}/{k}": v for k, v in metrics_of(base).items()}
                baseline_headline.update(base_metrics)
                metrics.update(base_metrics)
            self.ctx.log(step, metrics)
        headline.update(baseline_headline)
        backend.close()
        if not self.ctx.is_main:
            return headline
        write_report(self.ctx.output_dir("report"), report, sections)
        self.ctx.write_artifact_meta("report", {"evaluators": list(report["evaluators"]),
                                                "metrics": headline})
        return headline
