"""The perplexity filter's scoring through the model-call contract, with a model whose
log-probabilities are known: a uniform LM over V tokens has perplexity exactly V."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lmforge.interfaces import CausalLMOutput
from lmforge_data.filter_config import PerplexityFilterConfig
from lmforge_data.filters.scored import perplexity_factory

IGNORE = -100


class UniformLM(torch.nn.Module):
    """log p = -log(V) at every position whose label is not ignored; records its calls."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, input_ids, labels=None, return_logprobs=False, **kw):
        assert return_logprobs and labels is not None
        self.calls.append((input_ids.clone(), labels.clone()))
        lp = torch.where(labels != IGNORE, torch.tensor(-math.log(self.vocab)),
                         torch.tensor(0.0))
        return CausalLMOutput(token_logprobs=lp)


def _tok(eos: int = 1) -> SimpleNamespace:
    return SimpleNamespace(encode=lambda t: [10 + (ord(c) % 50) for c in t], eos_id=eos,
                           pad_id=0)


def test_uniform_model_perplexity_is_vocab_and_labels_are_shifted():
    f = perplexity_factory(PerplexityFilterConfig(batch_size=2, max_tokens=4))
    model = UniformLM(vocab=37)
    f._loaded = (model, _tok())
    ppl = f.perplexities(["abcdef", "ab", "x"])
    assert ppl == pytest.approx([37.0, 37.0, 37.0])
    ids, labels = model.calls[0]  # "abcdef" + EOS cut to 5 tokens: 4 inputs predict 4 labels
    enc = [10 + (ord(c) % 50) for c in "abcd"]
    assert ids[0].tolist() == enc
    assert labels[0].tolist() == enc[1:] + [10 + (ord("e") % 50)]
    assert labels[1].tolist() == [10 + (ord("b") % 50), 1, IGNORE, IGNORE]  # "ab" + EOS


def test_buckets_bounds_and_reasons():
    f = perplexity_factory(PerplexityFilterConfig(buckets=[100.0, 300.0], keep_buckets=[0, 1],
                                                  max_perplexity=1000.0))
    assert f.decide(50.0).metadata == {"perplexity": 50.0, "perplexity_bucket": 0}
    assert f.decide(100.0).metadata["perplexity_bucket"] == 1  # a cut-off starts its bucket
    r = f.decide(400.0)
    assert (r.keep, r.reason, r.metadata["perplexity_bucket"]) == (False, "bucket", 2)
    assert f.decide(2000.0).reason == "perplexity"
    with pytest.raises(ValueError, match="must increase"):
        PerplexityFilterConfig(buckets=[300.0, 100.0])
    with pytest.raises(ValueError, match="buckets \\[3\\] do not exist"):
        PerplexityFilterConfig(buckets=[100.0], keep_buckets=[3])
