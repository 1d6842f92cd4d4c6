"""The suite on the real ``dense`` architecture (skipped when ``lmforge_models`` is absent)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from eval_env import Env, greedy_chain

from lmforge.chat import END, encode_chat

pytest.importorskip("lmforge_models.plugin")


def test_dense_model_perplexity_chat_loss_and_greedy(env: Env) -> None:
    arch = env.pm.component_config_model("architecture", "dense").model_validate(
        {"type": "dense", "dim": 32, "n_layers": 2, "n_heads": 4, "multiple_of": 16,
         "max_seq_len": 32, "init_std": 0.3})
    build = env.pm.get_component("architecture", "dense").load_factory()
    torch.manual_seed(1)
    dense_dir = env.save(build(arch, vocab_size=env.tok.vocab_size), "dense", arch)
    report, md = env.run([{"type": "perplexity", "seq_len": 12}, {"type": "chat-loss"},
                          {"type": "generate", "prompts": ["the cat"], "modes": ["greedy"],
                           "max_new_tokens": 40}],
                         model=dense_dir, text=env.text, chat=env.chat)
    ev = report["evaluators"]
    model = env.load(dense_dir)
    tok = env.tok
    stream: list[int] = []
    for doc in env.heldout:
        stream += tok.encode(doc) + [tok.eos_id]
    nll = 0.0
    with torch.no_grad():
        for s in range(0, len(stream) - 1, 12):
            chunk = torch.tensor([stream[s:s + 13]])
            nll += float(F.cross_entropy(model(chunk[:, :-1]).logits[0], chunk[0, 1:], reduction="sum"))
    assert ev["perplexity"]["tokens"] == len(stream) - 1
    assert ev["perplexity"]["perplexity"] == pytest.approx(math.exp(nll / (len(stream) - 1)),
                                                           rel=1e-4)
    assert ev["chat-loss"]["tokens"] > 0 and math.isfinite(ev["chat-loss"]["loss"])
    ids, _ = encode_chat(tok.tokenizer, [{"role": "user", "content": "the cat"}],
                         add_generation_prompt=True)
    chain = greedy_chain(model, ids, 40, {tok.eos_id, tok.tokenizer.token_to_id(END)},
                         seq=32)
    assert ev["generate"]["generations"][0]["completion"] == tok.decode(chain)
    assert report["model"]["parameters"] == model.num_parameters()
