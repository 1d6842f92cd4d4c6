"""Config models of the rewards plugin's components (light: pydantic and lmforge only)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from lmforge import Config, Slot


class SubprocessSandboxConfig(Config):
    """Run programs in fresh ``python -I -S`` subprocesses with rlimits, no network, a temporary
    directory and an allow-listed environment (see docs/plugins/rewards.md)."""

    type: Literal["subprocess"] = Field(default="subprocess", description="Selects this sandbox.")
    isolation: Literal["auto", "namespaces", "process"] = Field(
        default="auto", description="'namespaces': user + network + PID namespaces through "
        "unshare (no network at all; every process of a run dies with it); 'process': rlimits, "
        "a session of its own and an audit hook that blocks socket calls (weaker); 'auto': "
        "namespaces where the machine allows them, else process.")
    timeout_s: float = Field(default=10.0, gt=0, le=3600, description="Wall-clock limit of one "
                             "run, in seconds (callers may pass a different one per run).")
    cpu_s: int = Field(default=10, ge=1, le=3600, description="CPU-time limit (RLIMIT_CPU) of "
                       "each process, in seconds.")
    memory_mb: int = Field(default=1024, ge=64, le=1 << 20, description="Address-space limit "
                           "(RLIMIT_AS) of each process, in MiB.")
    max_processes: int = Field(default=16, ge=1, le=4096, description="Processes and threads "
                               "a run may have at once (RLIMIT_NPROC inside the run's own user "
                               "namespace; in 'process' mode counted per user).")
    max_file_bytes: int = Field(default=16 * 2**20, ge=0, description="Largest file a run may "
                                "write (RLIMIT_FSIZE), in bytes.")
    max_open_files: int = Field(default=64, ge=16, le=65536, description="Open file "
                                "descriptors per process (RLIMIT_NOFILE).")
    max_output_bytes: int = Field(default=64 * 1024, ge=1024, description="stdout and stderr "
                                  "are each cut at this many bytes; a run that writes more is "
                                  "killed (limit 'output').")
    max_concurrent: int = Field(default=4, ge=1, le=256, description="Runs at once; more "
                                "callers wait. Also the pool size lmforge.sandbox.run_many uses.")
    tmp_dir: str | None = Field(default=None, description="Where the per-run work directories "
                                "are made (default: the system temporary directory).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment "
                                "variables for the program (nothing else is inherited).")


def _default_sandbox() -> dict[str, Any]:
    return {"type": "subprocess"}


class PythonChecksConfig(Config):
    """Partial credit for a Python function: it parses, its names resolve, its doctests pass."""

    type: Literal["python-checks"] = Field(default="python-checks",
                                           description="Selects this reward.")
    parse_weight: float = Field(default=0.2, ge=0, description="Credit for code that parses.")
    names_weight: float = Field(default=0.2, ge=0, description="Credit for code whose names all "
                                "resolve (given it parses).")
    doctest_weight: float = Field(default=0.6, ge=0, description="Credit times the fraction of "
                                  "the sample's doctests that pass (given it parses).")
    require_entry_point: bool = Field(default=True, description="Names resolve only if the "
                                      "code defines the row's entry_point (when it has one).")
    timeout_s: float = Field(default=5.0, gt=0, le=600, description="Wall-clock limit of one "
                             "sample's doctest run.")
    sandbox: Annotated[Any, Slot("sandbox")] = Field(
        default_factory=_default_sandbox, description="The sandbox the doctests run in.")


class ExactMatchConfig(Config):
    """1 when the answer extracted from the completion equals the reference, else 0."""

    type: Literal["exact-match"] = Field(default="exact-match", description="Selects this reward.")
    extract: list[str] = Field(
        default_factory=lambda: [r"####\s*(\S+)", "last-number"],
        description="How to find the answer, tried in order: a regular expression (its first "
        "group, else the whole match; the last match in the text wins; case-insensitive unless "
        "case_sensitive) or 'last-number' (the last number in the text). GSM8K style by "
        "default: the word after '####', else the last number.")
    extract_reference: bool = Field(default=True, description="Apply the same extraction to "
                                    "the reference when it matches (a GSM8K solution ending in "
                                    "'#### 42'); else the whole reference is the answer.")
    case_sensitive: bool = Field(default=False, description="Compare with case.")
    strip_chars: str = Field(default=" \t\n.$", description="Characters stripped from both "
                             "ends of both answers.")
    remove: list[str] = Field(default_factory=lambda: [","], description="Substrings removed "
                              "before comparing (thousands separators).")
    numeric: bool = Field(default=True, description="Answers that both parse as numbers are "
                          "compared as numbers (3.0 == 3).")

    @field_validator("extract")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one extraction (a regex or 'last-number')")
        for i, pattern in enumerate(value):
            if pattern == "last-number":
                continue
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"extract[{i}] {pattern!r} is not a valid regular "
                                 f"expression: {exc}") from None
        return value


class WeightedReward(Config):
    """One term of a composite reward."""

    weight: float = Field(description="Multiplies this reward's score (may be negative).")
    reward: Annotated[Any, Slot("reward")] = Field(description="The reward config.")


class CompositeConfig(Config):
    """A weighted sum of other rewards."""

    type: Literal["composite"] = Field(default="composite", description="Selects this reward.")
    rewards: list[WeightedReward] = Field(min_length=1, description="Terms: [{weight, reward: "
                                          "{type: ...}}]; the score is sum(weight * score).")


class RewardModelConfig(Config):
    """The score of a trained score-head model at the completion's last token."""

    type: Literal["reward-model"] = Field(default="reward-model", description="Selects this reward.")
    input: str = Field(default="reward_model", description="Name of the stage input that holds "
                       "the reward model (a model artifact with head: score).")
    tokenizer_input: str = Field(default="tokenizer", description="Name of the stage input "
                                 "that holds the reward model's tokenizer.")
    batch_size: int = Field(default=16, ge=1, description="Samples scored per forward pass.")
    max_length: int | None = Field(default=None, ge=2, description="Longest prompt+completion "
                                   "in tokens (default: the model's max_seq_len); longer ones "
                                   "keep their end (the prompt's start is dropped).")
    precision: Literal["fp32", "bf16"] = Field(default="fp32", description="Scoring dtype.")

    @model_validator(mode="after")
    def _names(self) -> RewardModelConfig:
        if self.input == self.tokenizer_input:
            raise ValueError("input and tokenizer_input must name different stage inputs")
        return self
