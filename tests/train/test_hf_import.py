"""Hugging Face import: a model that ``transformers`` creates with random weights and saves is
imported, fine-tuned for 5 SFT steps on the local backend, exported, and loaded back by
``transformers``; before training the imported model computes the original's logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import train_helpers as H
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from lmforge import StageFailed, StageInputError
from lmforge.modelio import ModelRecipe
from lmforge.testing import run_spec

transformers = pytest.importorskip("transformers")


def _hf_llama(folder: Path, vocab: int, tokenizer_json: Path, **kw: Any) -> Any:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-5, tie_word_embeddings=False, **kw)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.save_pretrained(folder)
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    return model


def _spec(hf_dir: Path, assets: dict[str, Path], export: bool = True) -> dict[str, Any]:
    stages = [
        {"id": "base", "kind": "import", "plugin": "hf", "config": {"path": str(hf_dir)}},
        {"id": "chats", "kind": "data", "plugin": "fixture",
         "config": {"path": str(assets["chat"]), "format": "chat"}},
        {"id": "sft", "kind": "train", "plugin": "sft",
         "inputs": {"dataset": "chats", "tokenizer": "base", "init": "base"},
         "config": {"loop": H.loop_cfg(True, steps=5, batch_size=4, seq_len=32,
                                       checkpoint_every=5)}},
    ]
    if export:
        stages.append({"id": "export", "kind": "export", "plugin": "hf",
                       "inputs": {"model": "sft", "tokenizer": "base"}})
    return {"name": "hf-import", "seed": 0, "stages": stages}


def _plugins() -> Any:
    import train_fakes

    import lmforge_align.plugin as align
    import lmforge_export.plugin as export
    import lmforge_models.plugin as models_plugin
    import lmforge_torch.plugin as torch_plugin
    import lmforge_train.plugin as train
    from lmforge.testing import plugin_manager

    return plugin_manager(train, align, export, models_plugin, torch_plugin, train_fakes)


def test_import_sft_export_round_trip(assets: dict[str, Path], tmp_path: Path) -> None:
    tok = Tokenizer.from_file(str(assets["tokenizer"] / "tokenizer.json"))
    hf_dir = tmp_path / "hf-llama"
    original = _hf_llama(hf_dir, tok.get_vocab_size(), assets["tokenizer"] / "tokenizer.json")
    pm = _plugins()
    result = run_spec(_spec(hf_dir, assets), pm, tmp_path / "run")
    assert [s.status for s in result.stages] == ["complete"] * 4

    # Before training: the imported artifact computes the Hugging Face model's logits.
    imported = tmp_path / "run/base/outputs/model"
    meta = json.loads((imported / "model.json").read_text())
    assert meta["architecture"]["type"] == "dense" and meta["vocab_size"] == tok.get_vocab_size()
    ours = ModelRecipe.from_artifact(imported, pm).build_full().eval()
    x = torch.randint(0, tok.get_vocab_size(), (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = original(x).logits
        got = ours(x).logits
    assert (got - ref).abs().max().item() <= 1e-4

    # After 5 SFT steps: the export loads in transformers and computes our trained model's logits.
    sft = tmp_path / "run/sft/outputs/model"
    trained = ModelRecipe.from_artifact(sft, pm).build_full().eval()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "run/export/outputs/hf_model").eval()
    with torch.no_grad():
        mine, theirs = trained(x).logits, loaded(x).logits
    assert (mine - theirs).abs().max().item() <= 1e-4
    assert (mine - got).abs().max().item() > 1e-3, "SFT did not change the model"
    losses = [v for _, v in H.loss_curve(tmp_path / "run/sft")]
    assert len(losses) == 5 and losses[-1] < losses[0]


def test_import_adds_chat_tokens_and_grows_the_embedding(assets: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """A tokenizer without lmforge's special tokens gets them; the new embedding rows do not
    change the logits of the original vocabulary."""
    plain = Tokenizer(models.BPE())
    plain.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    plain.train_from_iterator(H.real_text(), trainers.BpeTrainer(
        vocab_size=300, special_tokens=["</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    plain.save(str(tmp_path / "plain.json"))
    hf_dir = tmp_path / "hf-plain"
    original = _hf_llama(hf_dir, plain.get_vocab_size(), tmp_path / "plain.json")
    # the source's BOS (written as transformers writes an AddedToken) stays the tokenizer's BOS,
    # so an export's config.json names it (issue 8)
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": {"content": "</s>", "special": True}, "model_max_length": 99}))
    pm = _plugins()
    run_spec(_spec(hf_dir, assets, export=False), pm, tmp_path / "run", until="base")
    art = tmp_path / "run/base/outputs"
    tok_config = json.loads((art / "tokenizer/tokenizer_config.json").read_text())
    assert tok_config["bos_token"] == "</s>" and tok_config["model_max_length"] == 64
    tok_meta = json.loads((art / "tokenizer/artifact.json").read_text())
    assert set(tok_meta["added_tokens"]) == {"<|endoftext|>", "<|pad|>", "<|system|>",
                                             "<|user|>", "<|assistant|>", "<|end|>"}
    v0 = plain.get_vocab_size()
    assert json.loads((art / "model/model.json").read_text())["vocab_size"] == v0 + 6
    ours = ModelRecipe.from_artifact(art / "model", pm).build_full().eval()
    x = torch.randint(0, v0, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (ours(x).logits[..., :v0] - original(x).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("change, message", [
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 32}},
     "rope type 'llama3'"),
    ({"model_type": "gpt2"}, "model_type 'gpt2'"),
])
def test_unsupported_models_are_clear_errors(assets: dict[str, Path], tmp_path: Path,
                                             change: dict[str, Any], message: str) -> None:
    hf_dir = tmp_path / "hf"
    _hf_llama(hf_dir, 400, assets["tokenizer"] / "tokenizer.json")
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg.update(change)
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StageFailed) as err:
        run_spec(_spec(hf_dir, assets, export=False), _plugins(), tmp_path / "run", until="base")
    assert isinstance(err.value.__cause__, StageInputError)
    assert message in str(err.value)


def test_missing_files_are_named(assets: dict[str, Path], tmp_path: Path) -> None:
    hf_dir = tmp_path / "hf"
    _hf_llama(hf_dir, 400, assets["tokenizer"] / "tokenizer.json")
    (hf_dir / "model.safetensors").unlink()
    with pytest.raises(StageFailed, match="neither model.safetensors"):
        run_spec(_spec(hf_dir, assets, export=False), _plugins(), tmp_path / "run", until="base")
    (hf_dir / "tokenizer.json").unlink()
    with pytest.raises(StageFailed, match="missing .*tokenizer.json"):
        run_spec(_spec(hf_dir, assets, export=False), _plugins(), tmp_path / "run2", until="base")
