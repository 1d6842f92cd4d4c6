"""lmforge.generation: batched, left-padded generation with the KV cache equals step-by-step
recomputation, sampling is seeded and filtered as documented, stops and limits are reported."""

from __future__ import annotations

import pytest
import torch

from lmforge.generation import Completion, SamplingParams, generate, sample_next
from lmforge_models.config import DenseConfig, MoEConfig
from lmforge_models.dense import build
from lmforge_models.moe import build as build_moe

V = 53


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "moe":
        cfg = MoEConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16,
                        max_seq_len=40, n_experts=4, init_std=0.2)
        return build_moe(cfg, V).eval()
    cfg = DenseConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16,
                      max_seq_len=40, init_std=0.2)
    return build(cfg, V).eval()


class NoCache(torch.nn.Module):
    """The same model without the incremental protocol: generation recomputes every step."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.max_seq_len = inner, inner.max_seq_len

    def forward(self, input_ids, **kw):
        return self.inner(input_ids, **kw)


PROMPTS = [[1, 2, 3, 4, 5], [7], [9, 8, 7, 6, 5, 4, 3, 2], [11, 12]]


def _greedy_by_hand(model: torch.nn.Module, prompt: list[int], steps: int) -> tuple[list, list]:
    ids, toks, lps = list(prompt), [], []
    for _ in range(steps):
        logits = model(torch.tensor([ids])).logits[0, -1]
        t = int(logits.argmax())
        toks.append(t)
        lps.append(float(torch.log_softmax(logits.double(), -1)[t]))
        ids.append(t)
    return toks, lps


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_cached_batched_greedy_equals_one_prompt_at_a_time_by_hand(kind: str) -> None:
    model = _model(kind)
    params = SamplingParams(max_new_tokens=12, temperature=0)
    with torch.no_grad():
        cached = generate(model, PROMPTS, params, pad_id=0, device="cpu", batch_size=3)
        plain = generate(NoCache(model), PROMPTS, params, pad_id=0, device="cpu", batch_size=4)
        for c, p in zip(cached, plain, strict=True):
            toks, lps = _greedy_by_hand(model, PROMPTS[c.prompt_index], 12)
            assert c.token_ids == p.token_ids == toks
            assert c.logprobs == pytest.approx(lps, abs=1e-4)
            assert p.logprobs == pytest.approx(lps, abs=1e-4)
            assert c.finish_reason == "length"


def test_stop_ids_end_a_row_and_are_not_included() -> None:
    model = _model("dense")
    free = generate(model, PROMPTS, SamplingParams(max_new_tokens=10, temperature=0),
                    pad_id=0, device="cpu")
    stop = free[0].token_ids[3]
    got = generate(model, PROMPTS, SamplingParams(max_new_tokens=10, temperature=0,
                                                  stop_ids=(stop,)), pad_id=0, device="cpu")
    first = got[0]
    assert first.finish_reason == "stop" and first.stop_id == stop
    assert first.token_ids == free[0].token_ids[:free[0].token_ids.index(stop)]
    for g, f in zip(got[1:], free[1:], strict=True):  # other rows unaffected by row 0 stopping
        cut = f.token_ids.index(stop) if stop in f.token_ids else len(f.token_ids)
        assert g.token_ids == f.token_ids[:cut]


def test_context_limit_ends_with_length_and_long_prompts_keep_their_tail() -> None:
    model = _model("dense")
    long = list(range(1, 50))  # longer than max_seq_len 40
    (c,) = generate(model, [long], SamplingParams(max_new_tokens=100, temperature=0),
                    pad_id=0, device="cpu")
    assert c.finish_reason == "length" and len(c.token_ids) == 1  # 39 kept + 1 new = 40
    toks, _ = _greedy_by_hand(model, long[-39:], 1)
    assert c.token_ids == toks


def test_sampling_is_seeded_and_n_samples_differ() -> None:
    model = _model("dense")
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=4, seed=5)
    a = generate(model, PROMPTS[:2], params, pad_id=0, device="cpu")
    b = generate(model, PROMPTS[:2], params, pad_id=0, device="cpu")
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert [(c.prompt_index, c.sample_index) for c in a] == [(i, j) for i in range(2)
                                                             for j in range(4)]
    assert len({tuple(c.token_ids) for c in a[:4]}) > 1
    other = generate(model, PROMPTS[:2], SamplingParams(max_new_tokens=8, n=4, seed=6),
                     pad_id=0, device="cpu")
    assert [c.token_ids for c in other] != [c.token_ids for c in a]


def test_sample_next_filters_top_k_and_top_p_and_scores_with_temperature() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    seen_k = {int(sample_next(logits, SamplingParams(top_k=2), g)[0]) for _ in range(200)}
    assert seen_k == {0, 1}
    seen_p = {int(sample_next(logits, SamplingParams(top_p=0.85), g)[0]) for _ in range(300)}
    assert seen_p == {0, 1, 2}  # 0.5 + 0.3 < 0.85: the third token is needed, not the fourth
    tok, lp = sample_next(logits, SamplingParams(temperature=2.0), g)
    expect = torch.log_softmax(logits / 2.0, -1)[0, int(tok)]
    assert float(lp) == pytest.approx(float(expect), abs=1e-6)
    tok, lp = sample_next(logits, SamplingParams(temperature=0), g)
    assert int(tok) == 0 and float(lp) == pytest.approx(float(torch.log(torch.tensor(0.5))))


def test_bad_parameters_are_errors() -> None:
    for kw in ({"temperature": -1.0}, {"top_p": 0.0}, {"top_k": -1}, {"n": 0},
               {"max_new_tokens": 0}, {"temperature": float("inf")}):
        with pytest.raises(ValueError):
            SamplingParams(**kw)
    assert isinstance(Completion(0, 0).token_ids, list)


def test_every_row_gets_its_own_context_budget_with_and_without_cache() -> None:
    """Padding columns cost no context: a short prompt batched with a long one still grows to
    the model's max_seq_len (40) real tokens."""
    model = _model("dense")
    prompts = [list(range(1, 39)), [3, 4]]
    params = SamplingParams(max_new_tokens=100, temperature=0)
    cached = generate(model, prompts, params, pad_id=0, device="cpu")
    plain = generate(NoCache(model), prompts, params, pad_id=0, device="cpu")
    assert [len(c.token_ids) for c in cached] == [2, 38]
    assert all(c.finish_reason == "length" for c in cached)
    assert [c.token_ids for c in cached] == [c.token_ids for c in plain]
    for c, p in zip(cached, prompts, strict=True):
        assert c.token_ids == _greedy_by_hand(model, p, len(c.token_ids))[0]
