"""The generator component kind: the builtin generator equals the generation service on the
same artifact; the vllm generator fails with an install hint where vLLM is missing, maps
vLLM's outputs to Completion records, and its HF view of a model artifact loads in
transformers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import lmforge_generators.plugin as generators_plugin
import lmforge_models.plugin as models_plugin
from lmforge.chat import load_tokenizer
from lmforge.generation import SamplingParams, generate
from lmforge.generators import BuiltinGenerator, Generator, build_generator
from lmforge.modelio import load_model
from lmforge.testing import plugin_manager
from lmforge_generators.vllm import completions_from_outputs, hf_view, sampling_kwargs


@pytest.fixture(scope="module")
def pm():
    return plugin_manager(models_plugin, generators_plugin)


def test_builtin_generator_component_equals_the_service(gen_artifacts, pm) -> None:
    model_dir, tok_dir = gen_artifacts
    tok = load_tokenizer(tok_dir)
    config = pm.component_config_model("generator", "builtin").model_validate(
        {"type": "builtin", "device": "cpu", "batch_size": 2})
    gen = build_generator(pm, config, model_dir, tok)
    assert isinstance(gen, Generator) and gen.max_seq_len == 96
    prompts = [tok.encode("cats sit"), tok.encode("The quick brown fox"), tok.encode("def")]
    params = SamplingParams(max_new_tokens=6, temperature=0.0, stop_ids=(tok.eos_id,))
    got = gen.generate(prompts, params)
    model = load_model(model_dir, pm).eval()
    with torch.no_grad():
        want = generate(model, prompts, params, pad_id=tok.pad_id, device="cpu")
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert [c.logprobs for c in got] == [pytest.approx(c.logprobs, abs=1e-6) for c in want]
    assert "builtin" in gen.describe()
    gen.close()


def test_builtin_generator_refuses_a_tokenizer_larger_than_the_model(gen_artifacts, pm,
                                                                     tmp_path) -> None:
    from lmforge import StageInputError, testing

    model_dir, _ = gen_artifacts
    big = testing.write_tokenizer_artifact(tmp_path / "big", [f"w{i} x{i}" for i in range(400)],
                                           vocab_size=600)
    with pytest.raises(StageInputError, match="vocab_size 320"):
        BuiltinGenerator.from_artifact(model_dir, load_tokenizer(big), pm, device="cpu")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_generator_says_how_to_install_vllm(gen_artifacts, pm) -> None:
    model_dir, tok_dir = gen_artifacts
    config = pm.component_config_model("generator", "vllm").model_validate({"type": "vllm"})
    with pytest.raises(ImportError, match="pip install vllm"):
        build_generator(pm, config, model_dir, load_tokenizer(tok_dir))


def _lp(value: float, rank: int = 1) -> SimpleNamespace:
    return SimpleNamespace(logprob=value, rank=rank)


def test_vllm_outputs_map_to_completions() -> None:
    """Plain objects shaped like vLLM's RequestOutput / CompletionOutput."""
    params = SamplingParams(max_new_tokens=3, n=2, stop_ids=(9,), top_logprobs=1)
    outputs = [
        SimpleNamespace(outputs=[  # samples out of order: sorted by index
            SimpleNamespace(index=1, token_ids=[4, 5, 6], finish_reason="length",
                            logprobs=[{4: _lp(-0.1), 7: _lp(-0.05, 1)}, {5: _lp(-0.2)},
                                      {6: _lp(-0.3)}]),
            SimpleNamespace(index=0, token_ids=(3, 9), finish_reason="stop",
                            logprobs=[{3: _lp(-1.0)}, {9: _lp(-0.01)}])]),
        SimpleNamespace(outputs=[
            SimpleNamespace(index=0, token_ids=[8], finish_reason="length",
                            logprobs=[{8: _lp(-2.0)}]),
            SimpleNamespace(index=1, token_ids=[2, 2], finish_reason="stop",
                            logprobs=[{2: _lp(-0.5)}, {2: _lp(-0.5)}])]),
    ]
    got = completions_from_outputs(outputs, params, stop_check=lambda row, ids: ids == [8])
    assert [(c.prompt_index, c.sample_index) for c in got] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    first, second, third, fourth = got
    assert (first.token_ids, first.logprobs, first.finish_reason, first.stop_id) == \
        ([3], [-1.0], "stop", 9)  # the stop token vLLM keeps is removed
    assert (second.token_ids, second.logprobs, second.finish_reason) == \
        ([4, 5, 6], [-0.1, -0.2, -0.3], "length")
    assert second.top_logprobs[0] == [(7, -0.05)]  # best first
    assert third.finish_reason == "stop" and third.stop_id is None  # by stop_check
    assert fourth.token_ids == [2, 2] and fourth.stop_id is None  # a stop string ended it
    with pytest.raises(RuntimeError, match="expected n=2"):
        completions_from_outputs([SimpleNamespace(outputs=[])], params)
    kw = sampling_kwargs(SamplingParams(temperature=0.0, top_k=0, max_new_tokens=5,
                                        stop_ids=(1, 2)))
    assert kw["top_k"] == -1 and kw["max_tokens"] == 5 and kw["stop_token_ids"] == [1, 2]
    assert kw["logprobs"] == 0  # the sampled token's log-prob is always asked for


def test_hf_view_of_a_model_artifact_loads_in_transformers(gen_artifacts, pm,
                                                           tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    model_dir, tok_dir = gen_artifacts
    tok = load_tokenizer(tok_dir)
    folder = hf_view(model_dir, tok, pm, tmp_path / "view")
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ours = load_model(model_dir, pm).eval()
    ids = torch.tensor([tok.encode("The quick brown fox")])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids).logits, atol=1e-5, rtol=1e-5)
    assert transformers.AutoTokenizer.from_pretrained(folder).encode(
        "cats sit", add_special_tokens=False) == tok.encode("cats sit")
