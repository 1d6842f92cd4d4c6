"""Local judges against hand computations: option probabilities from a plain forward of the
judge model, swap averaging, scores, classification, likelihood, reward judges, the judge
reward."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from feedback_env import StageStandIn

from lmforge.judging import Classification, Comparison, swap_average
from lmforge.rewards import RewardSample
from lmforge_feedback.config import (
    JudgeRewardConfig,
    ModelLikelihoodJudgeConfig,
    ModelPromptedJudgeConfig,
    RewardJudgeConfig,
)
from lmforge_feedback.judges import (
    ModelLikelihoodJudge,
    ModelPromptedJudge,
    RewardJudge,
    prompt_text,
)


def _stage(env: Any, tmp_path: Any) -> StageStandIn:
    return StageStandIn(env, {"judge": env.artifact(env.model_dir, "model", "sft"),
                              "tokenizer": env.artifact(env.tok_dir, "tokenizer", "bpe")},
                        tmp_path)


def _direct_next(env: Any, judge: Any, ids: list[int], tokens: list[int]) -> list[float]:
    """log p(tokens | ids) by one unpadded forward of the judge's model."""
    with torch.no_grad():
        logits = judge.lm.model(torch.tensor([ids])).logits[0, -1].double()
    logp = torch.log_softmax(logits, -1)
    return [float(logp[t]) for t in tokens]


ITEMS = [
    Comparison(prompt=[{"role": "user", "content": "the cat sat"}], a="on a mat", b="far away",
               principle="Which response is more about cats?"),
    Comparison(prompt=[{"role": "user", "content": "dogs ran"}], a="good answer yes",
               b="the birds sang in tall green trees while the cat sat on a mat"),
    Comparison(prompt=[{"role": "system", "content": "be kind"},
                       {"role": "user", "content": "green"}], a="no", b="yes"),
]


def test_prompted_judge_matches_a_plain_forward_and_swap_averages(env, tmp_path):
    judge = ModelPromptedJudge(ModelPromptedJudgeConfig(batch_size=2))
    assert judge.requires() == {"judge": "model"}
    judge.check(_stage(env, tmp_path).inputs)
    judge.setup(_stage(env, tmp_path), "cpu")
    verdicts = judge.compare(ITEMS)  # batched: rows of different lengths, left padded
    a_id, b_id = env.tok.encode("A")[0], env.tok.encode("B")[0]
    cfg = judge.config
    for item, v in zip(ITEMS, verdicts, strict=True):
        expect = []
        for first, second in ((item.a, item.b), (item.b, item.a)):
            text = cfg.template.format(principle=item.principle or cfg.default_principle,
                                       prompt=prompt_text(item.prompt), a=first, b=second)
            from lmforge.chat import encode_chat

            ids = encode_chat(env.tok.tokenizer, [{"role": "user", "content": text}],
                              add_generation_prompt=True)[0]
            la, lb = _direct_next(env, judge, ids, [a_id, b_id])
            expect.append((math.exp(la) / (math.exp(la) + math.exp(lb)),
                           math.exp(la) + math.exp(lb)))
        (pa_ab, mass_ab), (pa_ba, mass_ba) = expect
        assert v.raw["ab"]["A"] == pytest.approx(pa_ab, abs=1e-5)
        assert v.raw["ba"]["A"] == pytest.approx(pa_ba, abs=1e-5)
        assert v.raw["option_mass"]["ab"] == pytest.approx(mass_ab, rel=1e-4)
        # a shown second: P(a) is the judge's P(B) in that order
        assert v.p_a == pytest.approx((pa_ab + (1 - pa_ba)) / 2, abs=1e-5)
        assert v.consistent == ((pa_ab > 0.5) == (1 - pa_ba > 0.5))
        assert v.judge == f"model-prompted:sft@{'sft-hash-0000'[:12]}"
        assert v.principle == item.principle
    # the model is random, but not indifferent: probabilities differ from 0.5
    assert any(abs(v.raw["ab"]["A"] - 0.5) > 0.01 for v in verdicts)


def test_swap_average_by_hand():
    assert swap_average(0.8, 0.2) == (0.5, False)  # pure position bias cancels out
    assert swap_average(0.9, 0.7) == (pytest.approx(0.8), True)
    assert swap_average(0.3, 0.1) == (pytest.approx(0.2), True)
    assert swap_average(0.5, 0.9)[1] is False  # 0.5 agrees with nothing


class _FixedLM:
    """A judge model whose next-token distribution puts P(A)=0.8, P(B)=0.1 (the rest
    elsewhere) after every prompt: pure position bias."""

    label, max_len = "fixed", 10_000

    def chat_ids(self, messages):
        return [1, 2, 3]

    def encode(self, text):
        return [{"A": 10, "B": 11}.get(text, 12)]

    def token_id(self, text):
        return self.encode(text)[0]

    def next_logprobs(self, prompts, token_ids):
        table = {10: math.log(0.8), 11: math.log(0.1)}
        return torch.tensor([[table.get(t, math.log(0.01)) for t in token_ids]
                             for _ in prompts], dtype=torch.float64)

    def close(self):
        pass


def test_position_bias_cancels_by_hand():
    judge = ModelPromptedJudge(ModelPromptedJudgeConfig(score_options=["A", "B"]))
    judge.lm = _FixedLM()
    judge._ready()
    v = judge.compare([Comparison(prompt=[{"role": "user", "content": "q"}], a="x", b="y")])[0]
    # each order: P(A) = 0.8 / 0.9 = 8/9 over the options; P(a) = 8/9 first, 1/9 second
    assert v.raw["ab"] == {"A": pytest.approx(8 / 9), "B": pytest.approx(1 / 9)}
    assert v.raw["option_mass"]["ab"] == pytest.approx(0.9)
    assert v.p_a == pytest.approx(0.5) and v.consistent is False and v.winner == "tie"
    # score over two options "A" (1) and "B" (2): 1 * 8/9 + 2 * 1/9
    assert judge.score([([{"role": "user", "content": "q"}], "x")]) == [pytest.approx(10 / 9)]
    probs = judge.classify([Classification([{"role": "user", "content": "q"}], "x",
                                            "refuses?", ("yes", "no"))])[0]
    assert probs == {"yes": pytest.approx(8 / 9), "no": pytest.approx(1 / 9)}


def test_prompted_judge_score_and_classify_on_the_model(env, tmp_path):
    judge = ModelPromptedJudge(ModelPromptedJudgeConfig())
    judge.setup(_stage(env, tmp_path), "cpu")
    digits = [env.tok.encode(str(i))[0] for i in range(1, 10)]
    item = ([{"role": "user", "content": "the cat"}], "sat on a mat")
    from lmforge.chat import encode_chat

    text = judge.config.score_template.format(principle=judge.config.default_principle,
                                              prompt="the cat", response="sat on a mat")
    ids = encode_chat(env.tok.tokenizer, [{"role": "user", "content": text}], True)[0]
    lp = _direct_next(env, judge, ids, digits)
    z = sum(math.exp(x) for x in lp)
    expect = sum((k + 1) * math.exp(x) / z for k, x in enumerate(lp))
    assert judge.score([item]) == [pytest.approx(expect, abs=1e-4)]
    got = judge.classify([Classification(item[0], item[1], "Is it about cats?",
                                          ("yes", "no", "unsure"))])[0]
    assert set(got) == {"yes", "no", "unsure"} and sum(got.values()) == pytest.approx(1.0)


def test_prompted_judge_truncates_long_texts_to_the_context(env, tmp_path):
    judge = ModelPromptedJudge(ModelPromptedJudgeConfig())
    judge.setup(_stage(env, tmp_path), "cpu")
    long = " ".join(["the cat sat on a mat"] * 200)
    v = judge.compare([Comparison(prompt=[{"role": "user", "content": long}], a=long,
                                  b="short")])[0]
    assert 0.0 <= v.p_a <= 1.0 and judge.truncated == 2


def test_options_must_differ():
    with pytest.raises(ValueError, match="two different"):
        ModelPromptedJudgeConfig(options=("A", "A"))
    with pytest.raises(ValueError, match="unknown field"):
        ModelPromptedJudgeConfig(template="{prompt} {a} {b} {oops}")
    with pytest.raises(ValueError, match="must contain"):
        ModelPromptedJudgeConfig(template="{prompt} {a}")


def test_likelihood_judge_is_sigmoid_of_mean_logprob_difference(env, tmp_path):
    judge = ModelLikelihoodJudge(ModelLikelihoodJudgeConfig(temperature=0.5))
    judge.setup(_stage(env, tmp_path), "cpu")
    from lmforge.chat import END, encode_chat

    def mean_logprob(prompt, reply):
        p = encode_chat(env.tok.tokenizer, prompt, add_generation_prompt=True)[0]
        r = env.tok.encode(reply + END)
        ids = torch.tensor([p + r])
        with torch.no_grad():
            logp = torch.log_softmax(judge.lm.model(ids).logits[0].double(), -1)
        return sum(float(logp[t - 1, ids[0, t]]) for t in range(len(p), len(p) + len(r))) \
            / len(r)

    verdicts = judge.compare(ITEMS)
    for item, v in zip(ITEMS, verdicts, strict=True):
        sa, sb = mean_logprob(item.prompt, item.a), mean_logprob(item.prompt, item.b)
        assert v.raw["score_a"] == pytest.approx(sa, abs=1e-4)
        assert v.p_a == pytest.approx(1 / (1 + math.exp(-(sa - sb) / 0.5)), abs=1e-4)
        assert v.consistent is None
    assert judge.score([(ITEMS[0].prompt, ITEMS[0].a)]) == [pytest.approx(
        mean_logprob(ITEMS[0].prompt, ITEMS[0].a), abs=1e-4)]


def _reward_cfg() -> Any:
    from feedback_env import CountConfig

    return RewardJudgeConfig.model_construct(type="reward", reward=CountConfig(word="good"),
                                             temperature=2.0)


def test_reward_judge_is_sigmoid_of_reward_difference(env, tmp_path):
    judge = RewardJudge(_reward_cfg())
    judge.setup(_stage(env, tmp_path), "cpu")
    v = judge.compare([Comparison([{"role": "user", "content": "q"}], "good good good",
                                  "good")])[0]
    assert v.raw == {"reward_a": 3.0, "reward_b": 1.0}
    assert v.p_a == pytest.approx(1 / (1 + math.exp(-1.0)))  # (3 - 1) / T=2
    assert judge.name == "reward:count-word"


def test_judge_reward_score_and_reference_modes(env, tmp_path):
    from lmforge_feedback.judge_reward import JudgeReward

    stage = _stage(env, tmp_path)
    judge_cfg = ModelLikelihoodJudgeConfig()
    cfg = JudgeRewardConfig(judge=judge_cfg, mode="score", scale=2.0, offset=-1.0)
    reward = JudgeReward(cfg)
    assert reward.requires() == {"judge": "model"}
    reward.setup(stage, "cpu")
    prompt = [{"role": "user", "content": "the cat"}]
    samples = [RewardSample(prompt=prompt, completion="sat on a mat", reference="ran far"),
               RewardSample(prompt=prompt, completion="green", reference="dogs")]
    alone = ModelLikelihoodJudge(judge_cfg)
    alone.setup(stage, "cpu")
    expect = alone.score([(s.prompt, s.completion) for s in samples])
    out = reward.score(samples)
    assert out.scores == [pytest.approx(2.0 * e - 1.0, abs=1e-6) for e in expect]
    ref = JudgeReward(cfg.model_copy(update={"mode": "reference"}))
    ref.setup(stage, "cpu")
    out = ref.score(samples)
    verdicts = alone.compare([Comparison(s.prompt, s.completion, s.reference) for s in samples])
    assert out.scores == [pytest.approx(2.0 * (2 * v.p_a - 1) - 1.0, abs=1e-6)
                          for v in verdicts]
    assert out.details[0]["p_beats_reference"] == pytest.approx(verdicts[0].p_a, abs=1e-6)
    from lmforge import StageInputError

    with pytest.raises(StageInputError, match="no reference"):
        ref.score([RewardSample(prompt=prompt, completion="x")])
    # a model judge's needs pass through the reward
    model_cfg = JudgeRewardConfig(judge=ModelPromptedJudgeConfig(model_input="reward_model"))
    assert JudgeReward(model_cfg).requires() == {"reward_model": "model"}


def test_hf_folder_judge_matches_the_artifact_judge(env, tmp_path):
    """The same weights as a local Hugging Face folder (transformers' LlamaForCausalLM and the
    tokenizer artifact's chat template): the prompted judge's probabilities agree."""
    import shutil

    import transformers

    from lmforge.modelio import load_model

    model = load_model(env.model_dir, env.pm)
    cfg = dict(env.arch.hf_config(env.tok.vocab_size))
    cfg.pop("architectures")
    for key in ("model_type", "torch_dtype", "dtype"):
        cfg.pop(key, None)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg,
                                                                pad_token_id=env.tok.pad_id))
    missing, unexpected = hf.load_state_dict(env.arch.to_hf(model.state_dict()), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(env.tok_dir / f, folder / f)
    ours = ModelPromptedJudge(ModelPromptedJudgeConfig())
    ours.setup(_stage(env, tmp_path), "cpu")
    theirs = ModelPromptedJudge(ModelPromptedJudgeConfig(path=str(folder), batch_size=2))
    assert theirs.requires() == {}
    theirs.setup(StageStandIn(env, {}, tmp_path), "cpu")
    assert theirs.name == "model-prompted:hf"
    for a, b in zip(ours.compare(ITEMS), theirs.compare(ITEMS), strict=True):
        assert b.raw["ab"]["A"] == pytest.approx(a.raw["ab"]["A"], abs=1e-4)
        assert b.p_a == pytest.approx(a.p_a, abs=1e-4)
    like = ModelLikelihoodJudge(ModelLikelihoodJudgeConfig(path=str(folder)))
    like.setup(StageStandIn(env, {}, tmp_path), "cpu")
    ref = ModelLikelihoodJudge(ModelLikelihoodJudgeConfig())
    ref.setup(_stage(env, tmp_path), "cpu")
    # the HF judge ends a reply with EOS (lmforge's judge with <|end|>): same ids, same numbers
    prompt_ids = like.lm.chat_ids(ITEMS[0].prompt)
    assert prompt_ids == ref.lm.chat_ids(ITEMS[0].prompt)
    reply = like.lm.reply_ids(ITEMS[0].a)
    total, n = ref.lm.reply_logprobs([prompt_ids], [reply])[0]
    assert like.score([(ITEMS[0].prompt, ITEMS[0].a)])[0] == pytest.approx(total / n, abs=1e-4)
