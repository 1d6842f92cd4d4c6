"""The openai-compatible judge against `lmforge serve` (lmforge.serving.start_server) running a
real model artifact: its answer probabilities, read from the server's top_logprobs in both
orders, equal the model-prompted judge's on the same model."""

from __future__ import annotations

from typing import Any

import pytest
from feedback_env import StageStandIn

from lmforge.judging import Comparison
from lmforge_feedback.config import ModelPromptedJudgeConfig, OpenAICompatibleJudgeConfig
from lmforge_feedback.http_judge import OpenAICompatibleJudge
from lmforge_feedback.judges import ModelPromptedJudge

ITEM = Comparison(prompt=[{"role": "user", "content": "the cat sat"}], a="on a mat",
                  b="far away", principle="Which response is more about cats?")


@pytest.fixture(scope="module")
def served(env: Any) -> Any:
    serving = pytest.importorskip("lmforge.serving")
    handle = serving.start_server(env.model_dir, env.tok_dir, port=0, plugins=env.pm,
                                  device="cpu", model_name="tiny-judge")
    yield handle
    handle.close()


def _options(env: Any, judge: ModelPromptedJudge) -> tuple[str, str]:
    """Two answer strings the served model ranks among its 20 likeliest first tokens in both
    orders (so top_logprobs holds them), each one token that decodes to itself."""
    import torch

    prompts = [judge._comparison_ids(ITEM, False), judge._comparison_ids(ITEM, True)]
    vocab = list(range(env.tok.vocab_size))
    logp = judge.lm.next_logprobs(prompts, vocab)
    tops = [set(torch.topk(row, 20).indices.tolist()) for row in logp]
    ok = []
    for t in sorted(tops[0] & tops[1]):
        text = env.tok.decode([t])
        if text and text == text.strip().strip(".:)(") and env.tok.encode(text) == [t] \
                and text.isprintable():
            ok.append(text)
    if len(ok) < 2:
        pytest.skip(f"the model's top tokens give no two usable options ({ok})")
    return ok[0], ok[1]


def test_http_judge_on_lmforge_serve_equals_the_local_judge(env, served, tmp_path):
    stage = StageStandIn(env, {"judge": env.artifact(env.model_dir, "model", "m"),
                               "tokenizer": env.artifact(env.tok_dir, "tokenizer", "t")},
                         tmp_path)
    local = ModelPromptedJudge(ModelPromptedJudgeConfig())
    local.setup(stage, "cpu")
    options = _options(env, local)
    # the local judge again, now with those options
    local = ModelPromptedJudge(ModelPromptedJudgeConfig(options=options))
    local.setup(stage, "cpu")
    http = OpenAICompatibleJudge(OpenAICompatibleJudgeConfig(
        base_url=f"{served.url}/v1", model=served.model_name, options=options,
        top_logprobs=20, max_tokens=1))
    http.setup(stage, "cpu")
    want = local.compare([ITEM])[0]
    got = http.compare([ITEM])[0]
    assert got.raw["source"] == {"ab": "logprobs", "ba": "logprobs"}
    assert got.raw["ab"]["A"] == pytest.approx(want.raw["ab"]["A"], abs=1e-4)
    assert got.raw["ba"]["A"] == pytest.approx(want.raw["ba"]["A"], abs=1e-4)
    assert got.p_a == pytest.approx(want.p_a, abs=1e-4)
    assert got.consistent == want.consistent
    assert http.client.requests_sent == 2
    # asked again: both answers come from the disk cache
    again = OpenAICompatibleJudge(http.config)
    again.setup(stage, "cpu")
    assert again.compare([ITEM])[0].p_a == got.p_a and again.client.requests_sent == 0
