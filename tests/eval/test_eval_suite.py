"""The ``evaluate/suite`` stage and its evaluators on a tiny real model, each number checked
against an independent direct computation (plain forward + log-softmax)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from eval_env import SEQ, Env, greedy_chain, logprob_sum
from eval_fakes import write_dataset

import lmforge_eval.plugin as eval_plugin
from lmforge import StageFailed, StageInputError
from lmforge.chat import END, encode_chat
from lmforge.testing import check_plugin


def test_plugin_conforms() -> None:
    assert check_plugin(eval_plugin) == []


@pytest.mark.parametrize("seq_len", [8, None])
def test_perplexity_matches_direct_computation(env: Env, seq_len: int | None) -> None:
    report, md = env.run([{"type": "perplexity", "seq_len": seq_len}], text=env.text)
    r = report["evaluators"]["perplexity"]
    tok, model = env.tok, env.load(env.model_dir)
    stream: list[int] = []
    for doc in env.heldout:
        stream += tok.encode(doc) + [tok.eos_id]
    length = seq_len or SEQ
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(stream) - 1, length):
            chunk = stream[s:s + length + 1]
            logits = model(torch.tensor([chunk[:-1]])).logits[0]
            nll += float(F.cross_entropy(logits.double(), torch.tensor(chunk[1:]), reduction="sum"))
            n += len(chunk) - 1
    assert r["tokens"] == n == len(stream) - 1
    assert r["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-4)
    # unigram baseline: add-one smoothed counts of train tokens (+EOS) on the same tokens
    counts = Counter(t for doc in env.train for t in tok.encode(doc) + [tok.eos_id])
    total, vocab = sum(counts.values()), tok.vocab_size
    uni = math.exp(-sum(math.log((counts[t] + 1) / (total + vocab)) for t in stream[1:]) / n)
    assert r["unigram_perplexity"] == pytest.approx(uni, rel=1e-9)
    assert r["unigram_train_tokens"] == total
    assert "| perplexity | perplexity |" in md and "| perplexity | unigram_perplexity |" in md


def test_chat_loss_matches_direct_computation(env: Env) -> None:
    report, _ = env.run([{"type": "chat-loss"}], chat=env.chat)
    r = report["evaluators"]["chat-loss"]
    model = env.load(env.model_dir)
    nll, n = 0.0, 0
    for conv in env.convs:
        ids, mask = encode_chat(env.tok.tokenizer, conv)
        with torch.no_grad():
            lp = F.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), -1)
        for t in range(1, len(ids)):
            if mask[t]:
                nll -= float(lp[t - 1, ids[t]])
                n += 1
    assert r["tokens"] == n and r["conversations"] == len(env.convs)
    assert r["loss"] == pytest.approx(nll / n, rel=1e-4)
    assert r["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-4)


def test_preference_known_answer_and_margins(env: Env) -> None:
    prompt = [{"role": "user", "content": "which animal?"}]
    rows = [{"prompt": prompt, "chosen": "zebrazebra", "rejected": "cat dog"},
            {"prompt": prompt, "chosen": "zebra", "rejected": "the mat"},
            {"prompt": prompt, "chosen": "zebra", "rejected": "birds sang"},
            {"prompt": prompt, "chosen": "far away", "rejected": "zebrazebrazebra"}]
    for r in rows:
        assert not set(env.tok.encode(r["rejected" if "zebra" in r["chosen"] else "chosen"])) \
            & env.favoured
    prefs = write_dataset(env.root / "prefs", "preference", {"heldout": rows})
    report, _ = env.run([{"type": "preference"}], model=env.biased_dir, preferences=prefs)
    r = report["evaluators"]["preference"]
    assert r["pairs"] == 4
    assert r["accuracy"] == 0.75 and r["norm_accuracy"] == 0.75  # the last pair is reversed
    model = env.load(env.biased_dir)
    prompt_ids, _ = encode_chat(env.tok.tokenizer, prompt, add_generation_prompt=True)
    margins, norm = [], []
    for row in rows:
        lp = {}
        for col in ("chosen", "rejected"):
            ids, _ = encode_chat(env.tok.tokenizer, [*prompt, {"role": "assistant",
                                                               "content": row[col]}])
            assert ids[:len(prompt_ids)] == prompt_ids
            assert env.tok.decode(ids[-2:]) == f"{END}\n"  # the reply ends at <|end|>
            ids = ids[:-1]
            lp[col] = (logprob_sum(model, ids, len(prompt_ids)), len(ids) - len(prompt_ids))
        margins.append(lp["chosen"][0] - lp["rejected"][0])
        norm.append(lp["chosen"][0] / lp["chosen"][1] - lp["rejected"][0] / lp["rejected"][1])
    assert r["margin"] == pytest.approx(sum(margins) / 4, rel=1e-4)
    assert r["norm_margin"] == pytest.approx(sum(norm) / 4, rel=1e-4)
    assert margins[0] > 0 and margins[3] < 0


def mc_file(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


MC_ROWS = [{"question": "the cat sat on", "choices": ["a mat", "zebra", "trees"], "answer": 1},
           {"question": "dogs ran", "choices": ["far away", "zebra zebra"], "answer": 1},
           {"question": "birds sang in", "choices": ["zebra", "tall green trees", "the"],
            "answer": 0}]


def test_multiple_choice_known_answer_and_direct_scores(env: Env) -> None:
    task = mc_file(env.root / "mc.jsonl", MC_ROWS)
    report, _ = env.run([{"type": "multiple-choice", "path": str(task), "choice_template": "{choice}",
                          "prompt_template": "{question} answer: "}], model=env.biased_dir)
    r = report["evaluators"]["multiple-choice"]
    assert r["questions"] == 3 and r["accuracy"] == 1.0 and r["accuracy_norm"] == 1.0
    assert r["chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    # same task from a dataset input, unbiased model, per-token normalisation: compare directly
    ds = write_dataset(env.root / "mcds", "multiple-choice", {"heldout": MC_ROWS})
    report, _ = env.run([{"type": "multiple-choice", "normalize": "tokens",
                          "prompt_template": "Q: {question}\nA:"}], choices=ds)
    r = report["evaluators"]["multiple-choice"]
    model = env.load(env.model_dir)
    acc = acc_norm = 0
    for row in MC_ROWS:
        ctx = env.tok.encode(f"Q: {row['question']}\nA:")
        scores, norm = [], []
        for c in row["choices"]:
            cont = env.tok.encode(f" {c}")
            s = logprob_sum(model, ctx + cont, len(ctx))
            scores.append(s)
            norm.append(s / len(cont))
        acc += scores.index(max(scores)) == row["answer"]
        acc_norm += norm.index(max(norm)) == row["answer"]
    assert r["accuracy"] == pytest.approx(acc / 3) and r["accuracy_norm"] == pytest.approx(acc_norm / 3)


@pytest.mark.parametrize("bad, message", [
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, "'answer' 2 is out of range"),
    ({"question": "q", "choices": ["a", "b"]}, "missing field(s) ['answer']"),
    ({"question": "q", "choices": ["a"], "answer": 0}, "at least 2"),
    ("{not json", "not valid JSON"),
])
def test_multiple_choice_bad_row_names_file_and_line(env: Env, bad: Any, message: str) -> None:
    task = mc_file(env.root / "bad.jsonl", [MC_ROWS[0], "", bad])
    with pytest.raises(StageFailed) as err:
        env.run([{"type": "multiple-choice", "path": str(task)}])
    assert isinstance(err.value.cause, StageInputError)
    assert f"{task}:3:" in str(err.value) and message in str(err.value)


def test_generate_greedy_is_the_argmax_chain_and_sampling_is_seeded(env: Env) -> None:
    gen = {"type": "generate", "prompts": ["the cat", "where do birds sing?"],
           "max_new_tokens": 70, "top_k": 20}
    report, md = env.run([gen, gen])
    first, second = report["evaluators"]["generate"], report["evaluators"]["generate-2"]
    assert first["generations"] == second["generations"]  # deterministic, sampling included
    model = env.load(env.model_dir)
    stop = {env.tok.eos_id, env.tok.tokenizer.token_to_id(END)}
    greedy = [g for g in first["generations"] if g["mode"] == "greedy"]
    assert len(greedy) == 2 and first["samples"] == 4
    for g, prompt in zip(greedy, gen["prompts"]):
        ids, _ = encode_chat(env.tok.tokenizer, [{"role": "user", "content": prompt}],
                             add_generation_prompt=True)
        chain = greedy_chain(model, ids, 70, stop)
        assert g["tokens"] == len(chain) and g["completion"] == env.tok.decode(chain)
        assert g["stopped"] == (len(chain) < min(70, SEQ - len(ids)))
    assert greedy[0]["completion"] in md and "where do birds sing?" in md
    sample = [g for g in first["generations"] if g["mode"] == "sample"]
    assert any(s["completion"] != g["completion"] for s, g in zip(sample, greedy))


def test_generate_stops_at_end_and_uses_chat_prompts(env: Env) -> None:
    report, _ = env.run([{"type": "generate", "num_prompts": 3, "modes": ["greedy"]}],
                        model=env.stopper_dir, chat=env.chat)
    r = report["evaluators"]["generate"]
    assert r["stop_rate"] == 1.0 and r["mean_new_tokens"] == 0
    assert [g["reference"] for g in r["generations"]] == [c[1]["content"] for c in env.convs[:3]]


@pytest.mark.parametrize("evaluator, missing", [
    ({"type": "perplexity"}, "'text'"), ({"type": "chat-loss"}, "'chat'"),
    ({"type": "preference"}, "'preferences'"), ({"type": "multiple-choice"}, "'choices'"),
    ({"type": "generate"}, "'chat'")])
def test_missing_input_is_a_check_error(env: Env, evaluator: dict, missing: str) -> None:
    with pytest.raises(StageFailed) as err:
        env.run([{"type": "chat-loss"}, evaluator], chat=env.chat) if missing != "'chat'" \
            else env.run([evaluator])
    msg = str(err.value.cause)
    assert isinstance(err.value.cause, StageInputError)
    assert f"evaluator {evaluator['type']!r}" in msg and f"needs input {missing}" in msg
    assert "not wired" in msg


def test_report_collects_all_evaluators(env: Env) -> None:
    task = mc_file(env.root / "mc2.jsonl", MC_ROWS)
    report, md = env.run([{"type": "perplexity", "name": "ppl"}, {"type": "chat-loss"},
                          {"type": "multiple-choice", "path": str(task)},
                          {"type": "generate", "prompts": ["hi"], "max_new_tokens": 5}],
                         text=env.text, chat=env.chat)
    assert list(report["evaluators"]) == ["ppl", "chat-loss", "multiple-choice", "generate"]
    assert report["model"]["max_seq_len"] == SEQ and report["tokenizer"]["vocab_size"] == 300
    for label in report["evaluators"]:
        assert f"| {label} |" in md
    assert "## generate (generate)" in md and "*completion:*" in md


def test_baseline_model_is_evaluated_alongside(env: Env) -> None:
    evaluators = [{"type": "perplexity"}, {"type": "chat-loss"},
                  {"type": "generate", "prompts": ["hi"], "max_new_tokens": 3}]
    report, md = env.run(evaluators, baseline=env.biased_dir, text=env.text, chat=env.chat)
    alone, _ = env.run(evaluators[:2], model=env.biased_dir, text=env.text, chat=env.chat)
    for label in ("perplexity", "chat-loss"):
        assert report["baseline_evaluators"][label] == alone["evaluators"][label]
    assert "generate" not in report["baseline_evaluators"]
    assert report["evaluators"]["chat-loss"]["loss"] != alone["evaluators"]["chat-loss"]["loss"]
    ours, theirs = (report["evaluators"]["chat-loss"]["loss"],
                    report["baseline_evaluators"]["chat-loss"]["loss"])
    assert "| model | baseline | change |" in md
    assert f"| chat-loss | loss | {ours:.4f} | {theirs:.4f} | {ours - theirs:.4f} |" in md
