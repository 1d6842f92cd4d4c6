"""Config models of the feedback plugin: judges, the ``judge`` reward, the AI-feedback stages
and the ``safety`` evaluator (light: pydantic, PyYAML and lmforge only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from lmforge import Config, Slot
from lmforge.specpath import SpecPath, check_files

# -- judge prompts --------------------------------------------------------------------------------
DEFAULT_PRINCIPLE = ("Which response is more helpful, honest and harmless, and answers the "
                     "request better?")

COMPARE_TEMPLATE = (
    "You compare two responses to a request.\n"
    "Principle: {principle}\n\n"
    "Request:\n{prompt}\n\n"
    "Response A:\n{a}\n\n"
    "Response B:\n{b}\n\n"
    "Answer with one letter, A or B: which response is better under the principle?")

SCORE_TEMPLATE = (
    "Rate the response to the request on a scale from 1 (very bad) to 9 (excellent).\n"
    "Principle: {principle}\n\n"
    "Request:\n{prompt}\n\n"
    "Response:\n{response}\n\n"
    "Answer with one digit.")

CLASSIFY_TEMPLATE = (
    "Read the request and the response, then answer the question.\n\n"
    "Request:\n{prompt}\n\n"
    "Response:\n{response}\n\n"
    "Question: {question}\n{answers}\n"
    "Answer with the letter of one option.")

_FIELDS = {"compare": ("principle", "prompt", "a", "b"),
           "score": ("principle", "prompt", "response"),
           "classify": ("prompt", "response", "question", "answers")}


def check_template(template: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> str:
    """``template`` if it uses only ``{allowed}`` fields and all of ``required``; else a
    ValueError saying which field is wrong and how to write literal braces."""
    import string

    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"template is not a valid format string ({exc}); write {{{{ and }}}} "
                         f"for literal braces") from None
    bad = sorted(used - set(allowed))
    if bad:
        raise ValueError(f"template uses unknown field(s) {bad}; it may use "
                         f"{', '.join('{' + a + '}' for a in allowed)} (write {{{{ and }}}} for "
                         f"literal braces)")
    missing = [r for r in required if r not in used]
    if missing:
        raise ValueError(f"template must contain {', '.join('{' + m + '}' for m in missing)}")
    return template


class _LocalModelJudge(Config):
    """What the judges that run a language model in this process share."""

    path: SpecPath | None = Field(
        default=None, description="A local Hugging Face model folder (config.json, weights, "
        "tokenizer files), loaded with transformers (local_files_only; needs `pip install "
        "transformers`). Unset: the judge model is the stage input named by model_input.")
    model_input: str = Field(
        default="judge", min_length=1, description="Stage input holding the judge's `model` "
        "artifact (when path is unset), e.g. 'judge' on data/ai-preferences, or "
        "'reward_model' inside an RL stage's reward.")
    tokenizer_input: str | None = Field(
        default=None, description="Stage input holding the judge's tokenizer. Unset: "
        "'judge_tokenizer' when the stage has it wired, else 'tokenizer' (the pipeline's).")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="Precision of the judge model: auto is bfloat16 on CUDA "
        "GPUs with bf16 support, float32 elsewhere.")
    batch_size: int = Field(default=8, ge=1, le=4096,
                            description="Sequences per forward pass of the judge model.")
    system: str | None = Field(default=None, description="A system message put before every "
                               "question to the judge (chat-format judges).")

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and check_files(info):
            import os

            if not os.path.isdir(value):
                raise ValueError(f"judge model folder {value!r} does not exist (relative paths "
                                 f"are relative to the spec file's folder)")
            if not os.path.isfile(os.path.join(value, "config.json")):
                raise ValueError(f"{value!r} is not a Hugging Face model folder: it has no "
                                 f"config.json")
        return value


class _PromptedQuestions(Config):
    """The questions a prompted judge is asked (shared by model-prompted and
    openai-compatible): which of two responses is better, an absolute score, a closed
    classification; templates are checked for their placeholders at validation."""

    template: str = Field(default=COMPARE_TEMPLATE, description="The question, sent as a user "
                          "message: {principle}, {prompt}, {a}, {b} are replaced.")
    options: tuple[str, str] = Field(default=("A", "B"), description="What the judge answers "
                                     "for the first and the second response (for a local "
                                     "model each must be one token of the judge's tokenizer; "
                                     "its first token is used).")
    score_template: str = Field(default=SCORE_TEMPLATE, description="The question for an "
                                "absolute score (score(), e.g. for the judge reward): "
                                "{principle}, {prompt}, {response} are replaced.")
    score_options: list[str] = Field(
        default_factory=lambda: [str(i) for i in range(1, 10)], min_length=2, max_length=100,
        description="Score answers in increasing order; the score is the expected position "
        "(1-based) under the judge's probabilities normalised over these answers.")
    classify_template: str = Field(default=CLASSIFY_TEMPLATE, description="The question for "
                                   "classify() (safety): {prompt}, {response}, {question}, "
                                   "{answers} (lettered options) are replaced.")
    default_principle: str = Field(default=DEFAULT_PRINCIPLE, min_length=1,
                                   description="Principle used when a question has none.")

    @field_validator("template")
    @classmethod
    def _compare_template(cls, v: str) -> str:
        return check_template(v, _FIELDS["compare"], ("a", "b"))

    @field_validator("score_template")
    @classmethod
    def _score_template(cls, v: str) -> str:
        return check_template(v, _FIELDS["score"], ("response",))

    @field_validator("classify_template")
    @classmethod
    def _classify_template(cls, v: str) -> str:
        return check_template(v, _FIELDS["classify"], ("response", "question", "answers"))


class ModelPromptedJudgeConfig(_LocalModelJudge, _PromptedQuestions):
    """A language model asked in a prompt which response is better; the answer is read from its
    next-token probabilities of the option tokens, in both orders, and averaged."""

    type: Literal["model-prompted"] = Field(default="model-prompted",
                                            description="Selects this judge.")
    answer_prefix: str = Field(default="", max_length=1000, description="Text the judge's "
                               "reply starts with, before the option token (e.g. 'Answer:').")

    @field_validator("options")
    @classmethod
    def _distinct(cls, v: tuple[str, str]) -> tuple[str, str]:
        if v[0] == v[1] or not v[0] or not v[1]:
            raise ValueError(f"options must be two different non-empty strings, got {list(v)}")
        return v


class ModelLikelihoodJudgeConfig(_LocalModelJudge):
    """score = the judge model's log-probability of the response given the prompt;
    compare = sigmoid((score_a - score_b) / temperature)."""

    type: Literal["model-likelihood"] = Field(default="model-likelihood",
                                              description="Selects this judge.")
    reduce: Literal["mean", "sum"] = Field(default="mean", description="mean: per-token mean "
                                           "log-prob (length-normalised); sum: total log-prob.")
    temperature: float = Field(default=1.0, gt=0, description="Divides the score difference "
                               "before the sigmoid (larger: softer probabilities).")
    principle_as_system: bool = Field(default=False, description="Put the principle before the "
                                      "prompt as a system message, so the likelihood is of the "
                                      "response given the principle.")


class OpenAICompatibleJudgeConfig(_PromptedQuestions):
    """A chat-completions HTTP endpoint (vLLM, llama.cpp's server, `lmforge serve`, a hosted
    API) asked which response is better, in both orders."""

    type: Literal["openai-compatible"] = Field(default="openai-compatible",
                                               description="Selects this judge.")
    base_url: str = Field(description="The API root, e.g. http://127.0.0.1:8000/v1 (requests go "
                          "to <base_url>/chat/completions).")
    model: str = Field(min_length=1, description="Model name sent in each request.")
    api_key_env: str | None = Field(default=None, description="Name of the environment variable "
                                    "holding the API key (sent as a Bearer token). The key "
                                    "itself never goes into the spec.")
    system: str | None = Field(default=None, description="A system message before every "
                               "question.")
    logprobs: bool = Field(default=True, description="Ask for logprobs/top_logprobs and read the "
                           "answer's probabilities from them; answers without them are parsed "
                           "from the text (probability 1 for the letter found).")
    top_logprobs: int = Field(default=10, ge=1, le=20, description="Alternatives per token "
                              "asked for.")
    max_tokens: int = Field(default=4, ge=1, le=4096, description="Tokens the judge may write.")
    concurrency: int = Field(default=4, ge=1, le=256, description="Requests in flight at once.")
    timeout_s: float = Field(default=60.0, gt=0, description="Timeout of one request (connect "
                             "and read), seconds.")
    retries: int = Field(default=5, ge=0, le=50, description="Retries of a request after a 429, "
                         "a 5xx, a connection error or a timeout.")
    backoff_s: float = Field(default=0.5, ge=0, description="Backoff base: the n-th retry waits "
                             "about backoff_s * 2^(n-1) seconds plus jitter (a Retry-After "
                             "header wins).")
    backoff_max_s: float = Field(default=30.0, ge=0, description="Longest wait between retries.")
    jitter_s: float = Field(default=0.25, ge=0, description="Random extra wait of up to this "
                            "many seconds per retry (spreads out clients).")
    cache_dir: SpecPath | None = Field(default=None, description="Folder of the request cache "
                                       "(one JSON file per request body hash). Unset: the "
                                       "stage's work folder (kept across resumes).")
    cache: bool = Field(default=True, description="Reuse cached answers to identical requests.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        import re

        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"api_key_env names an environment variable (e.g. "
                             f"OPENAI_API_KEY), got {v!r}; never put the key itself here")
        return v


class RewardJudgeConfig(Config):
    """Any ``reward`` component as a judge: compare = sigmoid((r_a - r_b) / temperature)."""

    type: Literal["reward"] = Field(default="reward", description="Selects this judge.")
    reward: Annotated[Any, Slot("reward")] = Field(description="The reward component, e.g. "
                                                   "{type: reward-model}.")
    temperature: float = Field(default=1.0, gt=0, description="Divides the reward difference "
                               "before the sigmoid.")


# -- the judge as a reward (d-RLAIF) --------------------------------------------------------------
class JudgeRewardConfig(Config):
    """A judge's opinion as the reward of an RL stage (d-RLAIF)."""

    type: Literal["judge"] = Field(default="judge", description="Selects this reward.")
    # Not Slot("judge"): the `reward` judge holds a Slot("reward"), and a reward holding any
    # judge would make the two slots contain each other (a reward of a reward is pointless).
    judge: Annotated[ModelPromptedJudgeConfig | ModelLikelihoodJudgeConfig
                     | OpenAICompatibleJudgeConfig, Field(discriminator="type")] = Field(
        description="The judge: model-prompted, model-likelihood or openai-compatible, e.g. "
                    "{type: model-prompted, model_input: reward_model}.")
    mode: Literal["score", "reference"] = Field(
        default="score", description="score: the judge's absolute score of the completion "
        "(d-RLAIF); reference: the probability that the completion beats the sample's "
        "reference response, mapped to [-1, 1] as 2p - 1.")
    principle: str | None = Field(default=None, description="Principle of the comparison "
                                  "(reference mode); unset: the judge's default.")
    scale: float = Field(default=1.0, gt=0, description="Multiplies the reward.")
    offset: float = Field(default=0.0, description="Added to the reward after scaling (e.g. -5 "
                          "centres a 1-9 score).")


# -- stages ---------------------------------------------------------------------------------------
class GenerationConfig(Config):
    """How the policy model writes text."""

    max_new_tokens: int = Field(default=64, ge=1, le=65536, description="Tokens per reply.")
    temperature: float = Field(default=0.8, ge=0, description="0: greedy.")
    top_k: int = Field(default=50, ge=0, description="Sample among the k most likely tokens "
                       "(0: all).")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    batch_size: int = Field(default=16, ge=1, le=4096, description="Rows per generation batch.")


class _FeedbackStage(Config):
    backend: Annotated[Any, Slot("backend")] = Field(
        default={"type": "local"}, description="Where the policy model runs: {type: local} "
        "(device, precision).")
    generation: GenerationConfig = Field(default_factory=GenerationConfig,
                                         description="Sampling of the policy model.")
    prompt_split: str = Field(default="train", description="Split of the prompts input to read "
                              "(the output keeps the split names: see heldout_fraction).")
    max_prompts: int | None = Field(default=None, ge=1, description="Use at most this many "
                                    "prompts (null: all).")
    heldout_fraction: float = Field(default=0.05, ge=0, lt=1, description="Fraction of output "
                                    "rows put in the 'heldout' split (by a hash of the row "
                                    "index and seed).")
    chunk_size: int = Field(default=32, ge=1, le=100_000, description="Rows per checkpointed "
                            "chunk: a resumed run redoes at most one chunk.")
    seed: int = Field(default=0, description="Seed of sampling and of principle choice (with the "
                      "pipeline seed).")


def _load_constitution_at_validation(value: str, info: ValidationInfo) -> str:
    if check_files(info):
        from lmforge_feedback.constitution import load_constitution

        load_constitution(value)  # ValueError with file:line for a bad file
    return value


class ConstitutionalConfig(_FeedbackStage):
    """Constitutional AI data: SL-CAI revisions or RL-CAI AI-labelled preference pairs."""

    mode: Literal["sl", "rl"] = Field(description="sl: response -> critique -> revision "
                                      "(rounds times), a chat dataset of revisions; rl: two "
                                      "sampled responses labelled by a judge, a preference "
                                      "dataset.")
    constitution: SpecPath = Field(description="The constitution YAML (see "
                                   "docs/plugins/feedback.md).")
    rounds: int = Field(default=1, ge=1, le=16, description="SL: critique/revision rounds, each "
                        "under a newly sampled principle.")
    preferences: bool = Field(default=False, description="SL: also output a dataset/preference "
                              "(chosen = final revision, rejected = original response).")
    judge: Annotated[Any, Slot("judge")] | None = Field(
        default=None, description="RL: the judge labelling the pairs (required in rl mode).")
    min_confidence: float = Field(default=0.0, ge=0, lt=0.5, description="RL: drop pairs whose "
                                  "label probability is within this of 0.5 (0: keep all; exact "
                                  "ties are always dropped).")

    @field_validator("constitution")
    @classmethod
    def _constitution(cls, value: str, info: ValidationInfo) -> str:
        return _load_constitution_at_validation(value, info)

    @model_validator(mode="after")
    def _judge_for_rl(self) -> ConstitutionalConfig:
        if self.mode == "rl" and self.judge is None:
            raise ValueError("mode 'rl' labels pairs with a judge: add judge: {type: "
                             "model-prompted} (or another judge)")
        if self.mode == "sl" and self.judge is not None:
            raise ValueError("mode 'sl' uses no judge (the policy critiques and revises "
                             "itself); remove 'judge' or use mode: rl")
        return self


class AIPreferencesConfig(_FeedbackStage):
    """RLAIF labels: pairs labelled by a judge, with agreement and consistency reported."""

    judge: Annotated[Any, Slot("judge")] = Field(description="The judge labelling each pair.")
    source: Literal["auto", "pairs", "sample"] = Field(
        default="auto", description="pairs: label the 'pairs' input (its chosen is the gold "
        "label); sample: sample two responses per prompt from 'model'; auto: pairs when wired.")
    principle: str | None = Field(default=None, description="The question every pair is judged "
                                  "under (unset: the judge's default, or a principle sampled "
                                  "from 'constitution').")
    constitution: SpecPath | None = Field(default=None, description="Sample each pair's "
                                          "principle (its comparison) from this constitution.")
    splits: list[str] = Field(default_factory=lambda: ["train", "heldout"], min_length=1,
                              description="pairs: the splits labelled (each kept as a split of "
                              "the output; missing splits are skipped).")
    min_confidence: float = Field(default=0.0, ge=0, lt=0.5, description="Drop pairs whose "
                                  "label probability is within this of 0.5 (exact ties are "
                                  "always dropped).")

    @field_validator("constitution")
    @classmethod
    def _constitution(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _load_constitution_at_validation(value, info)

    @model_validator(mode="after")
    def _one_principle_source(self) -> AIPreferencesConfig:
        if self.principle is not None and self.constitution is not None:
            raise ValueError("give either 'principle' or 'constitution', not both")
        return self

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        """The wiring matches ``source`` (validation, before anything runs)."""
        from lmforge import ConfigValueError

        has_pairs = "pairs" in inputs
        source = self.source if self.source != "auto" else ("pairs" if has_pairs else "sample")
        if source == "pairs" and not has_pairs:
            raise ConfigValueError("source 'pairs' needs the 'pairs' input (a "
                                   "dataset/preference) wired", ("source",))
        if source == "sample":
            missing = [n for n in ("model", "prompts") if n not in inputs]
            if missing:
                raise ConfigValueError(f"source 'sample' needs input(s) {missing} wired (the "
                                       f"policy model and a prompts dataset); or wire 'pairs'",
                                       ("source",))


# -- the safety evaluator -------------------------------------------------------------------------
class SafetyConfig(Config):
    """Harmful compliance on red-team prompts and over-refusal on benign look-alikes."""

    type: Literal["safety"] = Field(default="safety", description="Selects this evaluator.")
    name: str | None = Field(default=None, description="Label in the report (default: safety).")
    path: SpecPath = Field(description="JSONL prompt set: {prompt, category, benign (bool), "
                           "markers (optional list of strings whose presence marks a harmful "
                           "answer)} per line; see examples/feedback/safety_prompts.jsonl.")
    classifier: Literal["rules", "judge"] = Field(
        default="rules", description="rules: the documented refusal patterns and markers; "
        "judge: ask the judge whether the response refuses and whether it is harmful.")
    judge: Annotated[Any, Slot("judge")] | None = Field(default=None, description="The judge "
                                                        "(classifier: judge).")
    refusal_patterns: list[str] | None = Field(
        default=None, description="Regular expressions (case-insensitive) that mark a refusal; "
        "unset: the built-in list (docs/plugins/feedback.md).")
    max_new_tokens: int = Field(default=64, ge=1, le=65536, description="Tokens per response.")
    temperature: float = Field(default=0.0, ge=0, description="0: greedy responses.")
    seed: int = Field(default=0, description="Seed of sampling (temperature > 0).")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str, info: ValidationInfo) -> str:
        if check_files(info):
            from lmforge_feedback.prompt_set import load_prompt_set

            load_prompt_set(value)
        return value

    @field_validator("refusal_patterns")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        import re

        for i, p in enumerate(value or []):
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"refusal_patterns[{i}] {p!r} is not a regular expression: "
                                 f"{exc}") from None
        return value

    @model_validator(mode="after")
    def _judge(self) -> SafetyConfig:
        if self.classifier == "judge" and self.judge is None:
            raise ValueError("classifier 'judge' needs judge: {type: ...}")
        return self
