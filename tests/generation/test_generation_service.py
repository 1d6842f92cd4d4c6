"""lmforge.generation beyond tests/models/test_generation.py: rows that stop early are dropped
from the KV cache (KVCache.select) and the rest still equal uncached decoding and decoding by
hand (dense and MoE, log-probs within 1e-5); length-sorted batches with n samples equal one
prompt at a time; top log-probs and stop_check are checked against hand computations."""

from __future__ import annotations

import pytest
import torch

from lmforge.generation import SamplingParams, generate
from lmforge_models.config import DenseConfig, MoEConfig
from lmforge_models.dense import build
from lmforge_models.moe import build as build_moe

V = 61


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(1)
    shape = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16, max_seq_len=48,
                 init_std=0.2)
    if kind == "moe":
        return build_moe(MoEConfig(**shape, n_experts=4), V).eval()
    return build(DenseConfig(**shape), V).eval()


class NoCache(torch.nn.Module):
    """The same model without the incremental protocol (generation recomputes each step)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.max_seq_len = inner, inner.max_seq_len

    def forward(self, input_ids, **kw):
        return self.inner(input_ids, **kw)


def by_hand(model: torch.nn.Module, prompt: list[int], steps: int, stop: set[int] = frozenset()
            ) -> tuple[list[int], list[float], list[torch.Tensor]]:
    """Greedy decoding of one prompt with full recomputation: tokens (stop excluded),
    float64 log-probs and each step's log-softmax."""
    ids, toks, lps, dists = list(prompt), [], [], []
    with torch.no_grad():
        for _ in range(steps):
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
            t = int(logp.argmax())
            if t in stop:
                break
            toks.append(t)
            lps.append(float(logp[t]))
            dists.append(logp)
            ids.append(t)
    return toks, lps, dists


PROMPTS = [[5, 6, 7], [9], [11, 12, 13, 14, 15, 16, 17], [20, 21], [30, 31, 32, 33]]


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_rows_stopping_early_leave_the_cache_and_the_rest_are_unchanged(kind: str) -> None:
    model = _model(kind)
    free = [by_hand(model, p, 1)[0][0] for p in PROMPTS]
    stop = {free[0], free[1]}  # rows 0 and 1 (and any row producing them) stop at once
    params = SamplingParams(max_new_tokens=10, temperature=0, stop_ids=tuple(sorted(stop)))
    dropped: list[int] = []
    select = type(model.init_cache(1, 2)).select

    def spy(cache, rows):
        dropped.append(len(cache.seen) - len(rows))
        return select(cache, rows)

    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(model.init_cache(1, 2)), "select", spy)
        cached = generate(model, PROMPTS, params, pad_id=0, device="cpu", batch_size=5)
    assert dropped and dropped[0] >= 2, "finished rows were not dropped from the cache"
    with torch.no_grad():
        plain = generate(NoCache(model), PROMPTS, params, pad_id=0, device="cpu", batch_size=5)
    for p, c, u in zip(PROMPTS, cached, plain, strict=True):
        toks, lps, _ = by_hand(model, p, 10, stop)
        assert c.token_ids == u.token_ids == toks
        assert c.logprobs == pytest.approx(lps, abs=1e-5)
        assert u.logprobs == pytest.approx(c.logprobs, abs=1e-5)
        assert c.finish_reason == ("stop" if len(toks) < 10 else "length")
        assert (c.stop_id in stop) if c.finish_reason == "stop" else c.stop_id is None


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_length_sorted_batches_with_n_samples_equal_one_prompt_at_a_time(kind: str) -> None:
    model = _model(kind)
    params = SamplingParams(max_new_tokens=6, temperature=0, n=2)
    with torch.no_grad():
        batched = generate(model, PROMPTS, params, pad_id=0, device="cpu", batch_size=3)
        alone = [generate(model, [p], params, pad_id=0, device="cpu", batch_size=1)
                 for p in PROMPTS]
    assert [(c.prompt_index, c.sample_index) for c in batched] == \
        [(i, j) for i in range(len(PROMPTS)) for j in range(2)]
    for c in batched:
        one = alone[c.prompt_index][c.sample_index]
        assert c.token_ids == one.token_ids
        assert c.logprobs == pytest.approx(one.logprobs, abs=1e-5)


def test_top_logprobs_are_the_best_tokens_of_each_step() -> None:
    model = _model("dense")
    params = SamplingParams(max_new_tokens=5, temperature=0, top_logprobs=3)
    with torch.no_grad():
        got = generate(model, PROMPTS[:2], params, pad_id=0, device="cpu")
    for c, p in zip(got, PROMPTS[:2], strict=True):
        toks, _, dists = by_hand(model, p, 5)
        assert c.token_ids == toks and len(c.top_logprobs) == 5
        for step, dist in zip(c.top_logprobs, dists, strict=True):
            values, ids = dist.topk(3)
            assert [t for t, _ in step] == ids.tolist()
            assert [v for _, v in step] == pytest.approx(values.tolist(), abs=1e-5)
    # sampled: the alternatives come from the temperature-scaled distribution
    params = SamplingParams(max_new_tokens=1, temperature=2.0, top_logprobs=2, seed=3)
    with torch.no_grad():
        (c,) = generate(model, [PROMPTS[0]], params, pad_id=0, device="cpu")
        logits = model(torch.tensor([PROMPTS[0]])).logits[0, -1].double()
    expect = torch.log_softmax(logits / 2.0, -1).topk(2)
    assert [v for _, v in c.top_logprobs[0]] == pytest.approx(expect.values.tolist(), abs=1e-5)


def test_stop_check_ends_rows_and_they_are_prefixes_of_the_free_run() -> None:
    model = _model("dense")
    params = SamplingParams(max_new_tokens=12, temperature=0)
    with torch.no_grad():
        free = generate(model, PROMPTS, params, pad_id=0, device="cpu")
    seen: list[tuple[int, int]] = []

    def stop_check(row: int, ids: list[int]) -> bool:
        seen.append((row, len(ids)))
        return row == 2 and len(ids) >= 3  # only prompt 2 stops, once it has 3 tokens

    with torch.no_grad():
        got = generate(model, PROMPTS, params, pad_id=0, device="cpu", stop_check=stop_check,
                       check_every=4)
    assert (2, 4) in seen  # asked every 4 steps, with the row index in the returned list
    for i, (g, f) in enumerate(zip(got, free, strict=True)):
        if i == 2:
            assert g.finish_reason == "stop" and g.stop_id is None
            assert g.token_ids == f.token_ids[:4]  # the caller trims to where it matched
        else:
            assert g.token_ids == f.token_ids and g.finish_reason == "length"


def test_empty_prompts_and_bad_arguments_are_errors() -> None:
    model = _model("dense")
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [[1], []], SamplingParams(max_new_tokens=2), pad_id=0, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        generate(model, [[1]], SamplingParams(max_new_tokens=2), pad_id=0, device="cpu",
                 batch_size=0)
    with pytest.raises(ValueError, match="top_logprobs"):
        SamplingParams(top_logprobs=-1)
