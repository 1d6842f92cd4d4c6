"""Shared setup of the evaluation tests: artifacts on disk (tokenizer, tiny models, datasets), a
spec builder that runs the ``evaluate/suite`` stage through the real runner, and independent
reference computations (plain forward + log-softmax)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from eval_fakes import FakesPlugin, TinyLM, write_dataset, write_tokenizer

import lmforge_eval.plugin as eval_plugin
from lmforge.chat import END, load_tokenizer
from lmforge.modelio import load_model, save_model
from lmforge.testing import plugin_manager, run_spec

WORDS = "the cat sat on a mat while dogs ran far away and birds sang in tall green trees".split()
SEQ = 64


def sentence(rng: random.Random, n: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


class Env:
    """Artifacts on disk shared by the tests of this module."""

    def __init__(self, root: Path) -> None:
        rng = random.Random(0)
        self.root = root
        self.train = [sentence(rng, rng.randint(3, 20)) for _ in range(80)]
        self.heldout = [sentence(rng, rng.randint(3, 20)) for _ in range(12)]
        self.text = write_dataset(root / "text", "text", {
            "train": [{"text": t} for t in self.train],
            "heldout": [{"text": t} for t in self.heldout]})
        self.tok_dir = write_tokenizer(root / "tok", self.train, vocab_size=300)
        self.tok = load_tokenizer(self.tok_dir)
        self.convs = [[{"role": "user", "content": sentence(rng, 4)},
                       {"role": "assistant", "content": sentence(rng, 5)}] for _ in range(6)]
        self.convs.append([{"role": "system", "content": "be kind"},
                           {"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "the cat"},
                           {"role": "user", "content": "and?"},
                           {"role": "assistant", "content": "sat on a mat"}])
        self.chat = write_dataset(root / "chat", "chat", {
            "train": [{"messages": c} for c in self.convs],
            "heldout": [{"messages": c} for c in self.convs]})
        extra = []
        if importlib.util.find_spec("lmforge_models") is not None:
            import lmforge_models.plugin as models_plugin

            extra.append(models_plugin)
        import lmforge_torch.plugin as torch_plugin

        self.pm = plugin_manager(eval_plugin, torch_plugin, FakesPlugin(), *extra)
        arch = self.pm.component_config_model("architecture", "tiny-test")
        self.arch = arch.model_validate({"type": "tiny-test", "dim": 16, "max_seq_len": SEQ})
        torch.manual_seed(0)
        self.model_dir = self.save(TinyLM(self.arch, self.tok.vocab_size), "model")
        # A model that strongly prefers the tokens of "zebra".
        self.favoured = set(self.tok.encode("zebra"))
        biased = TinyLM(self.arch, self.tok.vocab_size)
        with torch.no_grad():
            biased.out.bias[list(self.favoured)] += 20.0
        self.biased_dir = self.save(biased, "biased")
        stopper = TinyLM(self.arch, self.tok.vocab_size)
        with torch.no_grad():
            stopper.out.bias[self.tok.tokenizer.token_to_id(END)] += 50.0
        self.stopper_dir = self.save(stopper, "stopper")
        self.runs = 0

    def save(self, model: Any, name: str, arch: Any = None) -> Path:
        save_model(self.root / name, model.state_dict(), arch or self.arch, self.tok.vocab_size)
        return self.root / name

    def load(self, path: Path) -> Any:
        return load_model(path, self.pm).eval()

    def spec(self, evaluators: list[dict], model: Path | None = None,
             baseline: Path | None = None, **data: Path) -> dict:
        fixtures = {"m": (model or self.model_dir, "model"), "tok": (self.tok_dir, "tokenizer")}
        if baseline is not None:
            fixtures["baseline"] = (baseline, "model")
        kinds = {"text": "dataset/text", "chat": "dataset/chat",
                 "preferences": "dataset/preference", "choices": "dataset/multiple-choice"}
        for name, path in data.items():
            fixtures[name] = (path, kinds[name])
        stages = [{"id": sid, "kind": "data", "plugin": "fixture",
                   "config": {"path": str(p), "kind": k}} for sid, (p, k) in fixtures.items()]
        inputs = {"model": "m", "tokenizer": "tok", **{n: n for n in data}}
        if baseline is not None:
            inputs["baseline"] = "baseline"
        stages.append({"id": "ev", "kind": "evaluate", "plugin": "suite", "inputs": inputs,
                       "config": {"evaluators": evaluators, "batch_size": 3,
                                  "backend": {"type": "local", "device": "cpu",
                                              "precision": "fp32"}}})
        return {"name": "eval", "stages": stages}

    def run(self, evaluators: list[dict], model: Path | None = None,
            baseline: Path | None = None, **data: Path) -> tuple[dict, str]:
        self.runs += 1
        run_dir = self.root / f"run{self.runs}"
        run_spec(self.spec(evaluators, model, baseline, **data), self.pm, run_dir)
        out = run_dir / "ev" / "outputs" / "report"
        # bytes, not read_text(): universal newlines would turn a generated "\r" into "\n"
        return (json.loads((out / "report.json").read_text()),
                (out / "report.md").read_bytes().decode("utf-8"))


def logprob_sum(model: Any, ids: list[int], scored_from: int) -> float:
    """sum_{t >= scored_from} log p(ids[t] | ids[:t]) by a plain forward."""
    with torch.no_grad():
        lp = F.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), -1)
    return float(sum(lp[t - 1, ids[t]] for t in range(scored_from, len(ids))))


def greedy_chain(model: Any, ids: list[int], steps: int, stop: set[int], seq: int = SEQ
                 ) -> list[int]:
    """Greedy continuation by full forwards, until a stop token, ``steps`` tokens, or a full
    context of ``seq`` tokens (the generation service does not slide past the model's
    context)."""
    out = []
    with torch.no_grad():
        for _ in range(steps):
            if len(ids) >= seq:
                break
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if nxt in stop:
                break
            out.append(nxt)
            ids = ids + [nxt]
    return out
