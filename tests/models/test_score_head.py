"""Score-head models (``head: score``): the module, the HF adapter and export as
``LlamaForSequenceClassification`` / ``MixtralForSequenceClassification``, and starting a score
model from a language model's artifact (``ModelRecipe.from_artifact(head="score")``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from pydantic import Field

import lmforge_export.plugin
import lmforge_models.plugin
from lmforge import Config, Stage, StageInputError, hookimpl, stage
from lmforge.chat import load_tokenizer
from lmforge.modelio import ModelRecipe, read_weights, save_model
from lmforge.testing import plugin_manager, run_spec

transformers = pytest.importorskip("transformers")


class _CopyConfig(Config):
    model_dir: str = Field(description="model artifact to hand on")
    tokenizer_dir: str = Field(description="tokenizer artifact to hand on")


class _CopyStage(Stage):
    def run(self) -> dict[str, float]:
        for name, src in (("model", self.config.model_dir),
                          ("tokenizer", self.config.tokenizer_dir)):
            shutil.copytree(src, self.ctx.output_dir(name), dirs_exist_ok=True)
        return {}


class FixturePlugin:
    @hookimpl
    def lmforge_components(self) -> list:
        return [stage("train", "fixture", config=_CopyConfig, factory=_CopyStage,
                      description="test fixture", inputs={},
                      outputs={"model": "model", "tokenizer": "tokenizer"})]


def _spec(model_dir: Path, tokenizer_dir: Path) -> dict:
    return {"name": "score-export", "seed": 0, "stages": [
        {"id": "src", "kind": "train", "plugin": "fixture",
         "config": {"model_dir": str(model_dir), "tokenizer_dir": str(tokenizer_dir)}},
        {"id": "hf", "kind": "export", "plugin": "hf",
         "inputs": {"model": "src.model", "tokenizer": "src.tokenizer"}, "config": {}},
    ]}


def _arch(pm, arch_type: str, **kw):
    extra = dict(ffn_hidden=48, n_experts=3, top_k=2) if arch_type == "moe" else {}
    return pm.component_config_model("architecture", arch_type)(
        type=arch_type, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64,
        init_std=0.1, **extra, **kw)


def _last_real(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (right or left padding)."""
    idx = torch.arange(mask.shape[1])
    return (idx * mask).argmax(-1)


@pytest.mark.parametrize("arch_type", ["dense", "moe"])
def test_score_head_exports_as_sequence_classifier(tmp_path: Path, tokenizer_dir: Path,
                                                   arch_type: str) -> None:
    pm = plugin_manager(lmforge_models.plugin, lmforge_export.plugin, FixturePlugin())
    tok = load_tokenizer(tokenizer_dir)
    arch = _arch(pm, arch_type, head="score")
    factory = pm.get_component("architecture", arch_type).load_factory()
    torch.manual_seed(0)
    model = factory(arch, vocab_size=tok.vocab_size).eval()
    assert model.lm_head is None and tuple(model.score.weight.shape) == (1, 32)
    assert model.num_parameters() == arch.num_parameters(tok.vocab_size)
    save_model(tmp_path / "model", model.state_dict(), arch, tok.vocab_size)
    assert "score.weight" in read_weights(tmp_path / "model")

    assert run_spec(_spec(tmp_path / "model", tokenizer_dir), pm,
                    tmp_path / "run").status == "complete"
    out = tmp_path / "run" / "hf" / "outputs" / "hf_model"
    cfg = json.loads((out / "config.json").read_text())
    family = "Mixtral" if arch_type == "moe" else "Llama"
    assert cfg["architectures"] == [f"{family}ForSequenceClassification"]
    assert cfg["num_labels"] == 1 and cfg["pad_token_id"] == tok.pad_id

    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, dtype=torch.float32).eval()
    assert type(hf).__name__ == f"{family}ForSequenceClassification"
    assert sum(p.numel() for p in hf.parameters()) == model.num_parameters()
    # right-padded batch with the pad id: transformers scores the last non-pad token
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, tok.vocab_size, (3, 20), generator=g)
    ids[ids == tok.pad_id] = 5
    lengths = torch.tensor([20, 13, 7])
    mask = (torch.arange(20)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, tok.pad_id)
    with torch.no_grad():
        scores = model(ids, attention_mask=mask).scores
        theirs = hf(ids, attention_mask=mask).logits[:, 0]
    assert scores.shape == (3, 20) and scores.dtype == torch.float32
    ours = scores[torch.arange(3), _last_real(mask)]
    assert (ours - theirs).abs().max().item() <= 1e-5
    # and the HF import reads the classifier back as a score-head architecture
    from lmforge_models.config import DenseConfig, MoEConfig
    back = (MoEConfig if arch_type == "moe" else DenseConfig).from_hf_config(cfg)
    assert back.head == "score" and back.transformer() == arch.transformer()


def test_score_head_refuses_labels_and_tying() -> None:
    pm = plugin_manager(lmforge_models.plugin)
    with pytest.raises(Exception, match="tie_embeddings: true has no meaning"):
        _arch(pm, "dense", head="score", tie_embeddings=True)
    from lmforge_models.dense import build
    model = build(_arch(pm, "dense", head="score"), 50)
    x = torch.randint(0, 50, (2, 6))
    with pytest.raises(ValueError, match="takes no labels"):
        model(x, labels=x)
    assert model(x, logits_to_keep=1).scores.shape == (2, 1)


@pytest.mark.parametrize("tie", [False, True])
def test_recipe_starts_score_model_from_lm_artifact(tmp_path: Path, tie: bool) -> None:
    """The body comes from the LM artifact, its LM head is dropped, the score head is the
    seeded fresh one; ``initial_state`` (Megatron's path) equals ``build_full`` (torch's)."""
    pm = plugin_manager(lmforge_models.plugin)
    lm_arch = _arch(pm, "dense", tie_embeddings=tie)
    from lmforge_models.dense import build
    torch.manual_seed(3)
    lm = build(lm_arch, 50)
    save_model(tmp_path / "lm", lm.state_dict(), lm_arch, 50)

    recipe = ModelRecipe.from_artifact(tmp_path / "lm", pm, seed=7, head="score")
    assert recipe.architecture.head == "score" and not recipe.architecture.tie_embeddings
    model = recipe.build_full()
    sd = model.state_dict()
    assert "lm_head.weight" not in sd and "score.weight" in sd
    for name, value in lm.state_dict().items():
        if name != "lm_head.weight":
            assert torch.equal(sd[name], value), name
    torch.manual_seed(7)
    fresh = build(recipe.architecture, 50)
    assert torch.equal(sd["score.weight"], fresh.score.weight)
    state = recipe.initial_state()
    assert set(state) == set(sd) and all(torch.equal(state[k], sd[k]) for k in sd)
    # the same head asked again is no change; an architecture without with_head is refused
    same = ModelRecipe.from_artifact(tmp_path / "lm", pm, head="lm")
    assert same.weights_architecture is None
    from lmforge.modelio import with_head
    with pytest.raises(StageInputError, match="has no 'score' head"):
        with_head(object(), "score", "x")  # type: ignore[arg-type]
