"""Judges that run in the stage's process: ``model-prompted``, ``model-likelihood``, ``reward``.

Formulas (docs/plugins/feedback.md has them with examples):

* ``model-prompted`` — the judge model reads the template (principle, prompt, responses A and
  B) as a user turn and, after the generation prompt and ``answer_prefix``, its next-token
  log-probabilities ``l_A``, ``l_B`` of the two option tokens give
  ``P(A) = exp(l_A) / (exp(l_A) + exp(l_B))``. Asked with ``a`` first (``p1 = P(A)``) and with
  ``a`` second (``p2 = P(B)``), ``p_a = (p1 + p2) / 2``; ``consistent`` when both are on the
  same side of 0.5. ``raw`` keeps both orders and the option mass ``exp(l_A) + exp(l_B)``
  (how much of its distribution the judge put on the options at all).
  ``score``: ``sum_i i * P(option_i)`` over ``score_options`` (normalised; 1-based), the
  expected rating; ``classify``: ``P(letter_k)`` normalised over the answers' letters.
* ``model-likelihood`` — ``score = mean`` (or ``sum``) of ``log p(response token | prompt,
  earlier tokens)`` under the judge model; ``p_a = sigmoid((score_a - score_b) / T)``. Order
  plays no part, so ``consistent`` is ``None``.
* ``reward`` — ``p_a = sigmoid((r_a - r_b) / T)`` with the reward component's scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lmforge import Artifact, StageInputError
from lmforge.judging import Classification, Comparison, Judge, Verdict, swap_average
from lmforge.rewards import RewardSample

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def prompt_text(messages: Sequence[Mapping[str, str]]) -> str:
    """A conversation as the text shown to a judge: a lone user message is itself; otherwise
    one ``role: content`` paragraph per message."""
    msgs = list(messages)
    if len(msgs) == 1 and msgs[0].get("role") == "user":
        return str(msgs[0]["content"])
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in msgs)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def normalised(logps: Sequence[float]) -> tuple[list[float], float]:
    """Probabilities of the options normalised over them, and their total mass in the full
    distribution (from log-probabilities)."""
    top = max(logps)
    weights = [math.exp(v - top) for v in logps]
    total = sum(weights)
    return [w / total for w in weights], math.exp(top) * total


class _LocalJudge(Judge):
    """Shared by the judges that load a model (``path`` or a stage input)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.lm: Any = None
        self.truncated = 0

    def requires(self) -> dict[str, str]:
        return {} if self.config.path is not None else {self.config.model_input: "model"}

    def check(self, inputs: Mapping[str, Artifact]) -> None:
        if self.config.path is not None:
            return
        from lmforge_feedback.judge_lm import tokenizer_input

        name = tokenizer_input(self.config, inputs)
        if name not in inputs or inputs[name].kind != "tokenizer":
            raise StageInputError(f"judge {self.config.type!r} needs the judge model's "
                                  f"tokenizer in input {name!r}; wire it (or set the judge's "
                                  f"tokenizer_input)")

    def setup(self, stage: Any, device: Any) -> None:
        from lmforge_feedback.judge_lm import load_judge_lm

        if self.lm is None:
            self.lm = load_judge_lm(self.config, stage, device, self.config.type)
            self.name = f"{self.config.type}:{self.lm.label}"
            self._ready()

    def _ready(self) -> None:
        return None

    def _need_setup(self) -> None:
        if self.lm is None:
            raise RuntimeError(f"judge {self.config.type!r}: call setup(stage, device) first")

    def close(self) -> None:
        if self.lm is not None:
            self.lm.close()
        self.lm = None


class ModelPromptedJudge(_LocalJudge):
    """Config: :class:`lmforge_feedback.config.ModelPromptedJudgeConfig`."""

    name = "model-prompted"

    def _ready(self) -> None:
        cfg = self.config
        self.option_ids = [self.lm.token_id(o) for o in cfg.options]
        if self.option_ids[0] == self.option_ids[1]:
            raise StageInputError(f"judge {self.name}: options {list(cfg.options)} start with "
                                  f"the same token; choose options that differ in their first "
                                  f"token")
        self.score_ids = [self.lm.token_id(o) for o in cfg.score_options]
        if len(set(self.score_ids)) != len(self.score_ids):
            raise StageInputError(f"judge {self.name}: score_options {cfg.score_options} do not "
                                  f"start with distinct tokens")

    def _question_ids(self, limit_what: str, render_frac: Any) -> tuple[list[int], bool]:
        from lmforge_feedback.judge_lm import fit

        cfg = self.config
        prefix = self.lm.encode(cfg.answer_prefix) if cfg.answer_prefix else []

        def render(frac: float) -> list[int]:
            messages = ([{"role": "system", "content": cfg.system}] if cfg.system else [])
            messages.append({"role": "user", "content": render_frac(frac)})
            return self.lm.chat_ids(messages) + prefix

        ids, cut_ = fit(render, self.lm.max_len, limit_what)
        self.truncated += int(cut_)
        return ids, cut_

    def _comparison_ids(self, item: Comparison, swap: bool) -> list[int]:
        from lmforge_feedback.judge_lm import cut

        cfg = self.config
        first, second = (item.b, item.a) if swap else (item.a, item.b)
        text = prompt_text(item.prompt)
        principle = item.principle or cfg.default_principle
        return self._question_ids(f"judge {self.name}", lambda f: cfg.template.format(
            principle=principle, prompt=cut(text, f), a=cut(first, f), b=cut(second, f)))[0]

    def compare(self, items: Sequence[Comparison]) -> list[Verdict]:
        self._need_setup()
        prompts = []
        for item in items:
            prompts += [self._comparison_ids(item, False), self._comparison_ids(item, True)]
        logp = self.lm.next_logprobs(prompts, self.option_ids).tolist()
        out = []
        for i, item in enumerate(items):
            (pa_ab, pb_ab), mass_ab = normalised(logp[2 * i])
            (pa_ba, pb_ba), mass_ba = normalised(logp[2 * i + 1])
            # "ab": a shown first, so P(A) is P(a); "ba": a shown second, so P(B) is P(a)
            p_a, consistent = swap_average(pa_ab, pb_ba)
            out.append(Verdict(
                p_a=p_a, consistent=consistent, judge=self.name, principle=item.principle,
                raw={"ab": {"A": pa_ab, "B": pb_ab}, "ba": {"A": pa_ba, "B": pb_ba},
                     "option_mass": {"ab": mass_ab, "ba": mass_ba}}))
        return out

    def score(self, items: Sequence[tuple[Any, str]]) -> list[float]:
        self._need_setup()
        from lmforge_feedback.judge_lm import cut

        cfg = self.config
        prompts = []
        for prompt, response in items:
            text = prompt_text(prompt)
            prompts.append(self._question_ids(f"judge {self.name} (score)",
                                              lambda f, t=text, r=response: cfg.score_template
                                              .format(principle=cfg.default_principle,
                                                      prompt=cut(t, f), response=cut(r, f)))[0])
        logp = self.lm.next_logprobs(prompts, self.score_ids).tolist()
        return [sum((k + 1) * p for k, p in enumerate(normalised(row)[0])) for row in logp]

    def classify(self, items: Sequence[Classification]) -> list[dict[str, float]]:
        self._need_setup()
        from lmforge_feedback.judge_lm import cut

        cfg = self.config
        out = []
        for item in items:  # answers may differ per item: one forward per distinct set
            letters = LETTERS[:len(item.answers)]
            listing = "\n".join(f"{ch}) {a}" for ch, a in zip(letters, item.answers))
            text = prompt_text(item.prompt)
            ids = self._question_ids(f"judge {self.name} (classify)",
                                     lambda f, t=text, it=item, ls=listing: cfg.classify_template
                                     .format(prompt=cut(t, f), response=cut(it.response, f),
                                             question=it.question, answers=ls))[0]
            token_ids = [self.lm.token_id(ch) for ch in letters]
            probs, _ = normalised(self.lm.next_logprobs([ids], token_ids)[0].tolist())
            out.append(dict(zip(item.answers, probs, strict=True)))
        return out


class ModelLikelihoodJudge(_LocalJudge):
    """Config: :class:`lmforge_feedback.config.ModelLikelihoodJudgeConfig`."""

    name = "model-likelihood"

    def _messages(self, prompt: Any, principle: str | None) -> list[dict[str, str]]:
        msgs = [dict(m) for m in prompt]
        if self.config.principle_as_system and principle:
            msgs = [{"role": "system", "content": principle}, *msgs]
        elif self.config.system:
            msgs = [{"role": "system", "content": self.config.system}, *msgs]
        return msgs

    def _scores(self, items: Sequence[tuple[Any, str, str | None]]) -> list[float]:
        prompts = [self.lm.chat_ids(self._messages(p, pr)) for p, _, pr in items]
        replies = [self.lm.reply_ids(r) for _, r, _ in items]
        out = []
        for total, n in self.lm.reply_logprobs(prompts, replies):
            out.append(total / n if self.config.reduce == "mean" else total)
        return out

    def score(self, items: Sequence[tuple[Any, str]]) -> list[float]:
        self._need_setup()
        return self._scores([(p, r, None) for p, r in items])

    def compare(self, items: Sequence[Comparison]) -> list[Verdict]:
        self._need_setup()
        flat = []
        for it in items:
            flat += [(it.prompt, it.a, it.principle), (it.prompt, it.b, it.principle)]
        scores = self._scores(flat)
        out = []
        for i, it in enumerate(items):
            sa, sb = scores[2 * i], scores[2 * i + 1]
            out.append(Verdict(p_a=sigmoid((sa - sb) / self.config.temperature),
                               raw={"score_a": sa, "score_b": sb, "reduce": self.config.reduce},
                               judge=self.name, principle=it.principle, consistent=None))
        return out


class RewardJudge(Judge):
    """Config: :class:`lmforge_feedback.config.RewardJudgeConfig`. The reward component is
    built with the stage's plugins at :meth:`setup`."""

    name = "reward"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.reward: Any = None

    def _built(self, plugins: Any) -> Any:
        if self.reward is None:
            component = plugins.get_component("reward", self.config.reward.type)
            self.reward = component.load_factory()(self.config.reward)
            self.name = f"reward:{self.config.reward.type}"
        return self.reward

    def requires(self) -> dict[str, str]:
        # the reward's own needs are only known once it is built; check() asks it
        return {}

    def check(self, inputs: Mapping[str, Artifact]) -> None:
        if self.reward is not None:
            self.reward.check(inputs)

    def setup(self, stage: Any, device: Any) -> None:
        reward = self._built(stage.plugins)
        for slot, kind in reward.requires().items():
            if slot not in stage.inputs:
                raise StageInputError(f"stage {stage.stage_id!r}: reward "
                                      f"{self.config.reward.type!r} (inside judge 'reward') "
                                      f"needs input {slot!r} ({kind}), which is not wired")
        reward.check(stage.inputs)
        reward.setup(stage, device)

    def _score(self, items: Sequence[tuple[Any, str]]) -> list[float]:
        if self.reward is None:
            raise RuntimeError("judge 'reward': call setup(stage, device) first")
        samples = [RewardSample(prompt=list(p), completion=r) for p, r in items]
        return [float(s) for s in self.reward.score(samples).scores]

    def score(self, items: Sequence[tuple[Any, str]]) -> list[float]:
        return self._score(items)

    def compare(self, items: Sequence[Comparison]) -> list[Verdict]:
        flat = []
        for it in items:
            flat += [(it.prompt, it.a), (it.prompt, it.b)]
        scores = self._score(flat)
        out = []
        for i, it in enumerate(items):
            ra, rb = scores[2 * i], scores[2 * i + 1]
            out.append(Verdict(p_a=sigmoid((ra - rb) / self.config.temperature),
                               raw={"reward_a": ra, "reward_b": rb}, judge=self.name,
                               principle=it.principle, consistent=None))
        return out

    def close(self) -> None:
        if self.reward is not None:
            self.reward.close()
