"""Config models of the evaluation stage and its evaluators (light: pydantic and lmforge only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from lmforge import Config, Slot


class EvaluatorConfig(Config):
    """Fields every evaluator has."""

    name: str | None = Field(default=None, description="Label of this evaluator in the report "
                             "(default: its type; repeated labels get a -2, -3 ... suffix).")


class PerplexityConfig(EvaluatorConfig):
    """Token-weighted perplexity of the ``text`` input's held-out documents."""

    type: Literal["perplexity"] = Field(default="perplexity", description="Selects this evaluator.")
    split: str = Field(default="heldout", description="Split of the text input to evaluate on.")
    seq_len: int | None = Field(default=None, ge=2, description="Window length in tokens "
                                "(default and maximum: the model's max_seq_len).")
    unigram: bool = Field(default=True, description="Also report the perplexity of an add-one "
                          "smoothed unigram model of the train split on the same tokens.")
    train_split: str = Field(default="train", description="Split the unigram baseline counts.")
    unigram_max_documents: int | None = Field(default=100_000, ge=1, description="Count at most "
                                              "this many train documents for the unigram "
                                              "baseline; null: the whole split.")


class ChatLossConfig(EvaluatorConfig):
    """Loss on assistant tokens of the ``chat`` input's held-out conversations."""

    type: Literal["chat-loss"] = Field(default="chat-loss", description="Selects this evaluator.")
    split: str = Field(default="heldout", description="Split of the chat input to evaluate on.")


class PreferenceConfig(EvaluatorConfig):
    """Does the model give the chosen reply a higher log-probability than the rejected one?"""

    type: Literal["preference"] = Field(default="preference", description="Selects this evaluator.")
    split: str = Field(default="heldout", description="Split of the preferences input.")


class MultipleChoiceConfig(EvaluatorConfig):
    """Log-likelihood scoring of each choice given the question prompt."""

    type: Literal["multiple-choice"] = Field(default="multiple-choice",
                                             description="Selects this evaluator.")
    path: str | None = Field(default=None, description="JSONL task file, one {question, choices, "
                             "answer} object per line; if unset the 'choices' input is used.")
    split: str = Field(default="heldout", description="Split of the choices input (when no path).")
    prompt_template: str = Field(default="Question: {question}\nAnswer:", description="Context "
                                 "given before each choice; {question} is replaced.")
    choice_template: str = Field(default=" {choice}", description="How a choice is appended to "
                                 "the context; {choice} is replaced.")
    normalize: Literal["chars", "tokens"] = Field(default="chars", description="Length unit of "
                                                  "the normalised accuracy (log-prob per unit).")

    @field_validator("prompt_template")
    @classmethod
    def _prompt_fields(cls, value: str) -> str:
        _check_template(value, "question")
        return value

    @field_validator("choice_template")
    @classmethod
    def _choice_fields(cls, value: str) -> str:
        _check_template(value, "choice")
        return value


def _check_template(template: str, field: str) -> None:
    try:
        template.format(**{field: "x"})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"template {template!r} may only use {{{field}}} (write {{{{ and }}}} "
                         f"for literal braces): {exc}") from None
    if f"{{{field}}}" not in template:
        raise ValueError(f"template {template!r} must contain {{{field}}}")


class GenerateConfig(EvaluatorConfig):
    """Sample generations for prompts (stopping at ``<|end|>`` or EOS) into the report."""

    type: Literal["generate"] = Field(default="generate", description="Selects this evaluator.")
    prompts: list[str] | None = Field(default=None, description="User messages to answer; if "
                                      "unset, num_prompts conversations of the chat input's "
                                      "held-out split (up to their first assistant turn).")
    num_prompts: int = Field(default=4, ge=1, description="Prompts taken from the chat input "
                             "when 'prompts' is unset.")
    split: str = Field(default="heldout", description="Split of the chat input for prompts.")
    chat_format: bool = Field(default=True, description="Wrap each prompt as a user turn of the "
                              "chat format followed by the assistant marker; false: raw text.")
    modes: list[Literal["greedy", "sample"]] = Field(default_factory=lambda: ["greedy", "sample"],
                                                     min_length=1, description="Decoding modes.")
    max_new_tokens: int = Field(default=64, ge=1, description="Tokens generated at most.")
    temperature: float = Field(default=0.8, gt=0, description="Sampling temperature.")
    top_k: int = Field(default=50, ge=0, description="Sample from the k most likely tokens "
                       "(0: all).")
    seed: int = Field(default=0, description="Seed of sampling (with the same prompts and "
                      "batch_size, a run is reproducible).")


class PassAtKConfig(EvaluatorConfig):
    """HumanEval-style pass@k: n sampled completions per problem, run against its doctests in a
    sandbox."""

    type: Literal["pass-at-k"] = Field(default="pass-at-k", description="Selects this evaluator.")
    split: str = Field(default="heldout", description="Split of the prompts input.")
    n: int = Field(default=10, ge=1, le=1000, description="Samples per problem.")
    ks: list[int] = Field(default_factory=lambda: [1, 5], min_length=1,
                          description="The k of each reported pass@k (each at most n).")
    temperature: float = Field(default=0.8, ge=0, description="Sampling temperature (0: "
                               "greedy, then every sample is the same).")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(default=0, ge=0, description="Sample from the k most likely tokens "
                       "(0: all).")
    max_new_tokens: int = Field(default=256, ge=1, description="Tokens per completion.")
    max_problems: int | None = Field(default=None, ge=1, description="At most this many "
                                     "problems (also bounded by the suite's max_examples).")
    timeout_s: float = Field(default=10.0, gt=0, le=600, description="Wall-clock limit of one "
                             "completion's test run.")
    seed: int = Field(default=0, description="Seed of sampling.")
    sandbox: Annotated[Any, Slot("sandbox")] = Field(
        default={"type": "subprocess"}, description="Where the generated code runs, e.g. "
        "{type: subprocess, memory_mb: 512}.")

    @model_validator(mode="after")
    def _ks(self) -> PassAtKConfig:
        bad = [k for k in self.ks if not 1 <= k <= self.n]
        if bad:
            raise ValueError(f"ks {bad} must lie between 1 and n ({self.n}): pass@k needs at "
                             f"least k samples")
        return self


class ExactMatchEvalConfig(EvaluatorConfig):
    """Accuracy of generated answers against the prompts' references (GSM8K style)."""

    type: Literal["exact-match"] = Field(default="exact-match", description="Selects this "
                                         "evaluator.")
    split: str = Field(default="heldout", description="Split of the prompts input.")
    temperature: float = Field(default=0.0, ge=0, description="0: greedy decoding.")
    max_new_tokens: int = Field(default=256, ge=1, description="Tokens per answer.")
    max_problems: int | None = Field(default=None, ge=1, description="At most this many "
                                     "problems (also bounded by the suite's max_examples).")
    seed: int = Field(default=0, description="Seed of sampling (temperature > 0).")
    show: int = Field(default=20, ge=0, description="Answers written into the report.")
    reward: Annotated[Any, Slot("reward")] = Field(
        default={"type": "exact-match"}, description="What scores an answer: the exact-match "
        "reward (extraction regexes, normalisation) by default, e.g. {type: exact-match, "
        "extract: ['answer is (\\S+)']}.")


class SuiteConfig(Config):
    """The ``evaluate/suite`` stage: run evaluators, write a report."""

    evaluators: list[Annotated[Any, Slot("evaluator")]] = Field(
        min_length=1, description="Evaluators to run, e.g. [{type: perplexity}, {type: generate}].")
    backend: Annotated[Any, Slot("backend")] = Field(
        default={"type": "local"}, description="Where the models run: {type: local} (device, "
        "precision: bf16 where supported) or a distributed backend (ddp, fsdp2: every rank "
        "takes part, the main rank writes the report).")
    batch_size: int = Field(default=8, ge=1, description="Sequences per forward pass.")
    max_examples: int | None = Field(default=1000, ge=1, description="At most this many "
                                     "documents/conversations/pairs/questions per evaluator; "
                                     "null: all.")
    note: str = Field(default="", max_length=4000, description="Text shown under the title of "
                      "report.md (and kept in report.json), e.g. what to expect of a toy run.")
