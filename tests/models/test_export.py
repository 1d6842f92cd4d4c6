"""The ``hf`` export stage: transformers loads the folder and agrees with lmforge."""

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
from lmforge.chat import encode_chat, load_tokenizer
from lmforge.modelio import WEIGHTS_INDEX, load_model, read_weights, save_model
from lmforge.testing import check_plugin, plugin_manager, run_spec

transformers = pytest.importorskip("transformers")


class FixtureConfig(Config):
    model_dir: str = Field(description="model artifact to hand on")
    tokenizer_dir: str = Field(description="tokenizer artifact to hand on")


class FixtureStage(Stage):
    """Copies ready-made model and tokenizer artifacts into its outputs."""

    def run(self) -> dict[str, float]:
        for name, src in (("model", self.config.model_dir),
                          ("tokenizer", self.config.tokenizer_dir)):
            shutil.copytree(src, self.ctx.output_dir(name), dirs_exist_ok=True)
        return {}


class FixturePlugin:
    @hookimpl
    def lmforge_components(self) -> list:
        return [stage("train", "fixture", config=FixtureConfig, factory=FixtureStage,
                      description="test fixture", inputs={},
                      outputs={"model": "model", "tokenizer": "tokenizer"})]


class NoExportPlugin:
    """An architecture whose config has no hf_config / to_hf / from_hf (its artifact stores its
    own parameter names)."""

    class Cfg(Config):
        width: int = Field(default=4, description="w")

    @hookimpl
    def lmforge_components(self) -> list:
        from lmforge import Component
        return [Component(kind="architecture", name="plain", config=self.Cfg,
                          factory=lambda cfg, vocab_size: torch.nn.Linear(cfg.width, vocab_size),
                          description="test")]


def _spec(model_dir: Path, tokenizer_dir: Path) -> dict:
    return {"name": "export-test", "seed": 0, "stages": [
        {"id": "src", "kind": "train", "plugin": "fixture",
         "config": {"model_dir": str(model_dir), "tokenizer_dir": str(tokenizer_dir)}},
        {"id": "hf", "kind": "export", "plugin": "hf",
         "inputs": {"model": "src.model", "tokenizer": "src.tokenizer"}, "config": {}},
    ]}


@pytest.mark.parametrize("tie,n_kv", [(False, 2), (True, 4), (True, 1)])
def test_transformers_loads_export_and_agrees(tmp_path: Path, tokenizer_dir: Path,
                                              tie: bool, n_kv: int) -> None:
    pm = plugin_manager(lmforge_models.plugin, lmforge_export.plugin, FixturePlugin())
    vocab = load_tokenizer(tokenizer_dir).vocab_size
    arch = pm.component_config_model("architecture", "dense")(
        type="dense", dim=64, n_layers=2, n_heads=4, n_kv_heads=n_kv, max_seq_len=64,
        tie_embeddings=tie, rope_theta=5000.0, init_std=0.1)
    torch.manual_seed(0)
    from lmforge_models.dense import build
    model = build(arch, vocab).eval()
    save_model(tmp_path / "model", model.state_dict(), arch, vocab)

    result = run_spec(_spec(tmp_path / "model", tokenizer_dir), pm, tmp_path / "run")
    assert result.status == "complete"
    out = tmp_path / "run" / "hf" / "outputs" / "hf_model"
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is tie and cfg["num_key_value_heads"] == n_kv
    assert cfg["eos_token_id"] == load_tokenizer(tokenizer_dir).eos_id

    # float32 export hard-links (or copies) the artifact's weights: the same bytes
    assert (out / "model.safetensors").read_bytes() == \
        (tmp_path / "model" / "model.safetensors").read_bytes()

    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in hf.parameters()) == model.num_parameters()
    x = torch.randint(0, vocab, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(x).logits, hf(x).logits
    assert ours.shape == theirs.shape == (2, 40, vocab)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_autotokenizer_chat_template_matches_encode_chat(tmp_path: Path,
                                                         tokenizer_dir: Path) -> None:
    pm = plugin_manager(lmforge_models.plugin, lmforge_export.plugin, FixturePlugin())
    tok = load_tokenizer(tokenizer_dir)
    arch = pm.component_config_model("architecture", "dense")(
        type="dense", dim=32, n_layers=1, n_heads=2, max_seq_len=64)
    from lmforge_models.dense import build
    save_model(tmp_path / "model", build(arch, tok.vocab_size).state_dict(), arch,
               tok.vocab_size)
    run_spec(_spec(tmp_path / "model", tokenizer_dir), pm, tmp_path / "run")
    out = tmp_path / "run" / "hf" / "outputs" / "hf_model"

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "How do I train a language model?"},
        {"role": "assistant", "content": "Start with clean data."},
        {"role": "user", "content": "And then? café 日本語"},
        {"role": "assistant", "content": "Tokenizers split text; models predict."},
    ]
    ids, mask = encode_chat(tok.tokenizer, messages)
    hf_ids = hf_tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    assert hf_ids["input_ids"] == ids
    assert [bool(m) for m in hf_ids["assistant_masks"]] == mask
    gen = json.loads((out / "generation_config.json").read_text())
    assert tok.tokenizer.token_to_id("<|end|>") in gen["eos_token_id"]


def test_export_rejects_architecture_without_hf_support(tmp_path: Path,
                                                        tokenizer_dir: Path) -> None:
    plain = NoExportPlugin()
    pm = plugin_manager(lmforge_export.plugin, plain, FixturePlugin())
    cfg = pm.component_config_model("architecture", "plain")(type="plain", width=4)
    vocab = load_tokenizer(tokenizer_dir).vocab_size
    save_model(tmp_path / "model", torch.nn.Linear(4, vocab).state_dict(), cfg, vocab)
    # no adapter: the artifact holds the module's own names
    assert set(read_weights(tmp_path / "model")) == {"weight", "bias"}
    with pytest.raises(Exception) as err:
        run_spec(_spec(tmp_path / "model", tokenizer_dir), pm, tmp_path / "run")
    assert isinstance(err.value.__cause__, StageInputError)
    assert "'plain'" in str(err.value) and "Hugging Face export" in str(err.value)


def test_export_checks_vocab_fits(tmp_path: Path, tokenizer_dir: Path) -> None:
    pm = plugin_manager(lmforge_models.plugin, lmforge_export.plugin, FixturePlugin())
    arch = pm.component_config_model("architecture", "dense")(
        type="dense", dim=32, n_layers=1, n_heads=2, max_seq_len=16)
    from lmforge_models.dense import build
    save_model(tmp_path / "model", build(arch, 50).state_dict(), arch, 50)
    with pytest.raises(Exception, match="vocab_size 50"):
        run_spec(_spec(tmp_path / "model", tokenizer_dir), pm, tmp_path / "run")


@pytest.mark.parametrize("arch_type", ["dense", "moe"])
def test_adapter_names_are_the_transformers_names(arch_type: str) -> None:
    """``to_hf`` produces exactly the state-dict names and shapes of the transformers model
    that ``hf_config`` describes (tied: without ``lm_head.weight``, which transformers ties)."""
    pm = plugin_manager(lmforge_models.plugin)
    extra = dict(ffn_hidden=24, n_experts=3, top_k=2) if arch_type == "moe" else {}
    for tie in (False, True):
        arch = pm.component_config_model("architecture", arch_type)(
            type=arch_type, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16,
            tie_embeddings=tie, **extra)
        module = pm.get_component("architecture", arch_type).load_factory()(arch, vocab_size=50)
        ours = arch.to_hf(module.state_dict())
        config = transformers.AutoConfig.for_model(**arch.hf_config(50))
        with torch.device("meta"):
            hf = transformers.AutoModelForCausalLM.from_config(config)
        theirs = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
        if tie:
            theirs.pop("lm_head.weight")
        assert sum(v.numel() for v in ours.values()) == sum(
            torch.Size(s).numel() for s in theirs.values()) == arch.num_parameters(50)
        if arch_type == "moe" and not any(".block_sparse_moe." in k for k in theirs):
            # transformers 5 keeps Mixtral's router and experts fused under new names and
            # converts the per-expert checkpoint names on load (the moe export test checks
            # the logits); compare the rest
            ours = {k: v for k, v in ours.items() if ".block_sparse_moe." not in k}
            theirs = {k: v for k, v in theirs.items() if ".mlp." not in k}
        assert {k: tuple(v.shape) for k, v in ours.items()} == theirs


def test_sharded_model_artifact_round_trips(tmp_path: Path, tokenizer_dir: Path) -> None:
    """``save_model`` with a small ``max_shard_size`` writes the transformers sharded layout;
    ``load_model``, the export stage and transformers all read it back equal."""
    pm = plugin_manager(lmforge_models.plugin, lmforge_export.plugin, FixturePlugin())
    vocab = load_tokenizer(tokenizer_dir).vocab_size
    arch = pm.component_config_model("architecture", "dense")(
        type="dense", dim=32, n_layers=3, n_heads=4, n_kv_heads=2, max_seq_len=32, init_std=0.1)
    from lmforge_models.dense import build
    torch.manual_seed(0)
    model = build(arch, vocab).eval()
    sd = model.state_dict()
    path = tmp_path / "model"
    save_model(path, sd, arch, vocab, max_shard_size=40_000)

    index = json.loads((path / WEIGHTS_INDEX).read_text())
    shards = sorted(p.name for p in path.glob("*.safetensors"))
    assert not (path / "model.safetensors").exists()
    assert len(shards) >= 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert sorted(set(index["weight_map"].values())) == shards
    assert set(index["weight_map"]) == set(arch.to_hf(sd))
    assert index["metadata"]["total_size"] == 4 * arch.num_parameters(vocab)  # fp32 bytes
    meta = json.loads((path / "model.json").read_text())
    assert meta["format"] == "hf-names" and meta["vocab_size"] == vocab
    assert meta["architecture"]["type"] == "dense"

    # lmforge reads it back exactly
    back = load_model(path, pm)
    assert set(back.state_dict()) == set(sd)
    for k, v in back.state_dict().items():
        assert torch.equal(v, sd[k]), k
    hf_names = read_weights(path)
    for k, v in arch.to_hf(sd).items():
        assert torch.equal(hf_names[k], v), k

    # transformers reads the artifact folder itself once it has a config.json ...
    direct = tmp_path / "direct"
    shutil.copytree(path, direct)
    (direct / "config.json").write_text(json.dumps(arch.hf_config(vocab)))
    x = torch.randint(0, vocab, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x).logits
        hf = transformers.AutoModelForCausalLM.from_pretrained(direct, dtype=torch.float32)
        assert (hf.eval()(x).logits - ours).abs().max().item() < 1e-4
        for k, v in arch.to_hf(sd).items():
            assert torch.equal(hf.state_dict()[k], v), k

    # ... and the export stage carries the shards and their index over unchanged
    assert run_spec(_spec(path, tokenizer_dir), pm, tmp_path / "run").status == "complete"
    out = tmp_path / "run" / "hf" / "outputs" / "hf_model"
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards
    assert json.loads((out / WEIGHTS_INDEX).read_text()) == index
    with torch.no_grad():
        exported = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        assert (exported.eval()(x).logits - ours).abs().max().item() < 1e-4


def test_export_plugin_conforms() -> None:
    assert check_plugin(lmforge_export.plugin) == []


@pytest.mark.parametrize("bos", [None, "<|system|>"])
def test_export_metadata_agrees_with_model_and_tokenizer(tmp_path: Path, tokenizer_dir: Path,
                                                         bos: str | None) -> None:
    """Loaded with transformers, the export's tokenizer says the model's context length, and
    config.json / generation_config.json name the tokenizer's BOS (issue 8): the tokenizer's
    own when it has one, else EOS, which precedes every pre-training document."""
    pm = plugin_manager(lmforge_models.plugin, lmforge_export.plugin, FixturePlugin())
    tok_dir = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, tok_dir)
    tc = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert tc["model_max_length"] != 48  # the artifact's own value (1024) must not leak
    if bos is not None:
        tc["bos_token"] = bos
        (tok_dir / "tokenizer_config.json").write_text(json.dumps(tc))
    tok = load_tokenizer(tok_dir)
    arch = pm.component_config_model("architecture", "dense")(
        type="dense", dim=32, n_layers=1, n_heads=2, max_seq_len=48)
    from lmforge_models.dense import build
    save_model(tmp_path / "model", build(arch, tok.vocab_size).state_dict(), arch,
               tok.vocab_size)
    run_spec(_spec(tmp_path / "model", tok_dir), pm, tmp_path / "run")
    out = tmp_path / "run" / "hf" / "outputs" / "hf_model"

    config = transformers.AutoConfig.from_pretrained(out)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    gen = transformers.GenerationConfig.from_pretrained(out)
    assert config.max_position_embeddings == 48 == hf_tok.model_max_length
    expected_bos = tok.tokenizer.token_to_id(bos) if bos else tok.eos_id
    assert hf_tok.bos_token_id == expected_bos
    assert config.bos_token_id == gen.bos_token_id == hf_tok.bos_token_id
    assert config.eos_token_id == hf_tok.eos_token_id and config.pad_token_id == hf_tok.pad_token_id
    # declaring a BOS changes no encoding: the chat template still matches encode_chat
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the cat"}]
    assert hf_tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"] \
        == encode_chat(tok.tokenizer, messages)[0]
    assert hf_tok("hello world")["input_ids"] == tok.encode("hello world")


CODE = [
    "def f(x):\n    return x + 1\n\n\ndef g(y):\n    if y:\n        return y\n    return 0\n",
    "class A:\n\tdef m(self):\n\t\treturn 1\n\n\tdef n(self):\n\t\tpass\n",
    "\n\nSome text.\n\n  Indented two.\n    Indented four.\n",
] * 30
REPLIES = ["    return x + 1", "\treturn 1", "\n\nSome text.", "\nreturn y", " leading space",
           "  \n    mixed", "        return y\n    return 0", "no leading whitespace", "\t\t"]


@pytest.mark.parametrize("reply", REPLIES)
def test_chat_mask_trains_every_reply_token_and_agrees_with_transformers(
        tmp_path: Path, reply: str) -> None:
    """A reply that starts with whitespace (indented code, a blank line) is trained on from its
    first character: the role marker's line break does not merge with it (issue 8). lmforge's
    mask equals transformers' assistant mask on the exported tokenizer, and the reply's tokens
    are those of the reply alone, as DPO and generation tokenize it."""
    from lmforge.testing import write_tokenizer_artifact

    tok_dir = write_tokenizer_artifact(tmp_path / "tok", CODE, vocab_size=330)
    tok = load_tokenizer(tok_dir)
    assert any(t.startswith("Ċ") and len(t) > 1 for t in tok.tokenizer.get_vocab()), \
        "the test tokenizer merges a line break with what follows"
    pm = plugin_manager(lmforge_models.plugin, lmforge_export.plugin, FixturePlugin())
    arch = pm.component_config_model("architecture", "dense")(
        type="dense", dim=32, n_layers=1, n_heads=2, max_seq_len=64)
    from lmforge_models.dense import build
    save_model(tmp_path / "model", build(arch, tok.vocab_size).state_dict(), arch,
               tok.vocab_size)
    run_spec(_spec(tmp_path / "model", tok_dir), pm, tmp_path / "run")
    hf_tok = transformers.AutoTokenizer.from_pretrained(
        tmp_path / "run" / "hf" / "outputs" / "hf_model")

    messages = [{"role": "system", "content": "\tbe terse"},
                {"role": "user", "content": "    write it"},
                {"role": "assistant", "content": reply},
                {"role": "user", "content": "\nagain"},
                {"role": "assistant", "content": reply}]
    ids, mask = encode_chat(tok.tokenizer, messages)
    hf = hf_tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                    return_assistant_tokens_mask=True)
    assert hf["input_ids"] == ids
    assert [bool(m) for m in hf["assistant_masks"]] == mask
    alone = tok.encode(reply + "<|end|>")
    trained = [i for i, m in zip(ids, mask) if m]
    assert trained == alone + alone  # every token of both replies, nothing else
    assert tok.decode(trained) == (reply + "<|end|>") * 2
    # the generation prompt ends where a reply begins: prompt + reply = the full encoding
    prompt, _ = encode_chat(tok.tokenizer, messages[:2], add_generation_prompt=True)
    assert ids[:len(prompt) + len(alone)] == prompt + alone
    assert hf_tok.apply_chat_template(messages[:2], tokenize=True, return_dict=True,
                                      add_generation_prompt=True)["input_ids"] == prompt
