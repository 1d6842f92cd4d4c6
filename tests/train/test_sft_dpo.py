"""SFT masking and training, the DPO loss formula, and a DPO run that learns preferences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import train_helpers as H

from lmforge.chat import load_tokenizer
from lmforge.testing import run_spec
from lmforge_align.dpo import PairBatches, fit_pair, pair_arrays
from lmforge_align.preference_loss import dpo_loss
from lmforge_train.data import ChatBatches, chat_arrays


# -- SFT masks ----------------------------------------------------------------------------------
def test_sft_labels_only_on_assistant_tokens(assets, tmp_path):
    tok = load_tokenizer(assets["tokenizer"])
    arrays, info = chat_arrays(tmp_path / "c", assets["chat"], "train", tok, seq_len=48)
    assert info["rows"] == 64 and info["truncated"] == 0
    batch = ChatBatches(arrays).rows(np.arange(5))
    for b in range(5):
        labels = batch["labels"][b]
        targets = labels[labels != -100].tolist()
        row = H.chat_rows(64)[b]["messages"]
        assert tok.decode(targets) == row[1]["content"] + "<|end|>"
        # every labelled position predicts the *next* input token
        ids = batch["input_ids"][b]
        pos = (labels != -100).nonzero().flatten()
        assert torch.equal(labels[pos[:-1]], ids[pos[:-1] + 1])
        # nothing before the assistant turn carries loss
        text_before = tok.decode(ids[:pos[0] + 1].tolist())
        assert text_before.endswith("<|assistant|>") and "It is" not in text_before


def test_sft_truncation_drops_rows_without_assistant_tokens(assets, tmp_path):
    tok = load_tokenizer(assets["tokenizer"])
    arrays, info = chat_arrays(tmp_path / "c", assets["chat"], "train", tok, seq_len=8)
    assert info["truncated"] == 64 and info["kept"] == 0


# -- DPO formula --------------------------------------------------------------------------------
def test_dpo_loss_matches_paper_formula_on_known_numbers():
    pc, pr = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rc, rr = torch.tensor([-11.0, -4.5]), torch.tensor([-11.5, -2.5])
    beta = 0.1
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    # h0 = (-10 + 11) - (-12 + 11.5) = 1.5;  h1 = (-4 + 4.5) - (-3 + 2.5) = 1.0
    # -log sigma(beta h) = log(1 + exp(-beta h))
    expected = [math.log(1 + math.exp(-0.15)), math.log(1 + math.exp(-0.1))]
    assert expected == pytest.approx([0.6209570477895, 0.6443966600735])
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert cr.tolist() == pytest.approx([0.1, 0.05])
    assert rj.tolist() == pytest.approx([-0.05, -0.05])

    # An unfavourable pair: h = -2, beta = 0.5 -> -log sigma(-1) = log(1 + e)
    l2, _, _ = dpo_loss(torch.tensor([-5.0]), torch.tensor([-3.0]), torch.tensor([-5.0]),
                        torch.tensor([-5.0]), 0.5)
    assert l2.item() == pytest.approx(math.log(1.0 + math.e), rel=1e-6)

    # label smoothing eps: (1 - eps) * -log sigma(bh) + eps * -log sigma(-bh)
    ls, _, _ = dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], beta, label_smoothing=0.2)
    bh = beta * 1.5
    want = 0.8 * math.log(1 + math.exp(-bh)) + 0.2 * math.log(1 + math.exp(bh))
    assert ls.item() == pytest.approx(want, rel=1e-6)
    ipo, _, _ = dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], beta, loss_type="ipo")
    assert ipo.item() == pytest.approx((1.5 - 1 / (2 * beta)) ** 2, rel=1e-6)
    hinge, _, _ = dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], beta, loss_type="hinge")
    assert hinge.item() == pytest.approx(1 - 0.15, rel=1e-6)


def test_dpo_loss_gradient_pushes_chosen_up_and_rejected_down():
    pc = torch.tensor([-3.0], requires_grad=True)
    pr = torch.tensor([-3.0], requires_grad=True)
    loss, _, _ = dpo_loss(pc, pr, torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.1)
    loss.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.05) and pr.grad.item() == pytest.approx(0.05)


def test_pairs_share_prompt_and_label_only_the_response(assets, tmp_path):
    tok = load_tokenizer(assets["tokenizer"])
    arrays, _ = pair_arrays(tmp_path / "p", assets["preference"], "train", tok, seq_len=48)
    batch = PairBatches(arrays).rows(np.arange(3))
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape[0] == 6
    for b in range(3):
        chosen = tok.decode(labels[b][labels[b] != -100].tolist())
        rejected = tok.decode(labels[b + 3][labels[b + 3] != -100].tolist())
        assert chosen == "Sure, happy to help.<|end|>"
        assert rejected == "No. Go away.<|end|>"
    p, c, r, cut = fit_pair(list(range(30)), [1] * 8, [2] * 4, width=20)
    assert cut and len(p) + len(c) == 20 and p == list(range(18, 30)) and r == [2] * 4


# -- end to end: pretrain -> SFT -> DPO ---------------------------------------------------------
@pytest.fixture(scope="module", params=[False] + ([True] if H.REAL else []),
                ids=lambda r: "dense-local" if r else "fakes")
def chain(assets, tmp_path_factory, request):
    real = request.param
    run_dir = tmp_path_factory.mktemp("chain")
    loop = H.loop_cfg(real, steps=6, log_every=2, checkpoint_every=100)
    spec = {"name": "chain", "seed": 1, "stages": H.base_stages(assets) + [
        {"id": "chats", "kind": "data", "plugin": "fixture",
         "config": {"path": str(assets["chat"]), "format": "chat"}},
        {"id": "prefs", "kind": "data", "plugin": "fixture",
         "config": {"path": str(assets["preference"]), "format": "preference"}},
        {"id": "pretrain", "kind": "train", "plugin": "pretrain",
         "inputs": {"dataset": "data", "tokenizer": "bpe"},
         "config": {"model": H.model_cfg(real), "loop": loop}},
        {"id": "sft", "kind": "train", "plugin": "sft",
         "inputs": {"dataset": "chats", "tokenizer": "bpe", "init": "pretrain"},
         "config": {"loop": H.loop_cfg(real, steps=16, log_every=2, checkpoint_every=100)}},
        {"id": "dpo", "kind": "align", "plugin": "dpo",
         "inputs": {"dataset": "prefs", "tokenizer": "bpe", "init": "sft"},
         "config": {"beta": 0.1, "loop": H.loop_cfg(real, steps=16, log_every=1,
                                                           checkpoint_every=8)}},
    ]}
    res = run_spec(spec, H.make_pm(real), run_dir)
    return run_dir, {s.stage_id: s.metrics for s in res.stages}


def test_sft_learns_assistant_replies(chain):
    run_dir, m = chain
    curve = H.loss_curve(run_dir / "sft")
    assert curve[-1][1] < curve[0][1] - 0.5, curve
    assert m["sft"]["heldout/loss"] < curve[0][1]
    assert m["sft"]["conversations"] == 64 and m["sft"]["dropped"] == 0
    assert (run_dir / "sft" / "outputs" / "model" / "model.safetensors").is_file()


def test_dpo_learns_the_preference(chain):
    run_dir, m = chain
    recs = [r for r in H.metrics(run_dir / "dpo") if "train/loss" in r]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy"):
        assert f"train/{key}" in recs[0]
    # At step 1 the policy is the reference (no dropout): loss log 2, rewards 0.
    assert recs[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert recs[0]["train/rewards/margin"] == pytest.approx(0.0, abs=1e-4)
    assert recs[-1]["train/loss"] < recs[0]["train/loss"]
    assert recs[-1]["train/rewards/accuracy"] > recs[0]["train/rewards/accuracy"]
    d = m["dpo"]
    assert d["heldout/accuracy"] >= 0.9 and d["heldout/margin"] > 0
    assert d["heldout/pairs"] == 16
    assert any((run_dir / "dpo" / "work").glob("ref-train-*/ref.npy"))
