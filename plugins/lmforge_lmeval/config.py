"""Config of the ``lm-eval`` evaluator (light: pydantic and lmforge only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge import Config
from lmforge.specpath import SpecPath


class LmEvalConfig(Config):
    """lm-evaluation-harness tasks, run in-process on the evaluated model."""

    name: str | None = Field(default=None, description="Label of this evaluator in the report "
                             "(default: its type).")
    type: Literal["lm-eval"] = Field(default="lm-eval", description="Selects this evaluator.")
    tasks: list[str] = Field(min_length=1, description="Task (or group) names, as the task "
                             "YAML files in include_path name them.")
    include_path: SpecPath = Field(description="Folder of task YAML files (and the local data "
                                   "files they name). Only these tasks are indexed: nothing is "
                                   "downloaded from the Hugging Face Hub.")
    num_fewshot: int | None = Field(default=None, ge=0, description="Few-shot examples per "
                                    "question (default: each task's own setting).")
    limit: int | None = Field(default=None, ge=1, description="At most this many documents per "
                              "task (default: the suite's max_examples, else all).")
    max_gen_toks: int = Field(default=256, ge=1, description="Tokens generated for "
                              "generate_until requests that give no max_gen_toks.")
    bootstrap_iters: int = Field(default=1000, ge=0, description="Bootstrap resamples for the "
                                 "standard errors of metrics without a closed form (0: none).")
    seed: int = Field(default=1234, description="Seed of the harness (few-shot sampling) and of "
                      "sampled generations.")
