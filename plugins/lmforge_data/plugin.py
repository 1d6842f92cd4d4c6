"""Registration of the data plugin's components (imported at discovery: keep it light)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lmforge
from lmforge import Component, InputSlot, stage
from lmforge_data import config as cfg
from lmforge_data import curation_config as ccfg
from lmforge_data import filter_config as fcfg
from lmforge_data import stage_config as scfg
from lmforge_data.filter_inputs import curate_inputs


def _curate_outputs(config: Any) -> Mapping[str, str]:
    return {"dataset": f"dataset/{config.format}"}


def _mix_inputs(config: Any) -> Mapping[str, InputSlot]:
    kind = f"dataset/{config.format}"
    slots = {name: InputSlot((kind,), help=f"a {kind} to mix") for name in config.sources}
    if config.unit == "tokens":
        slots["tokenizer"] = InputSlot(("tokenizer",), help="counts the tokens of 'unit: tokens'")
    return slots


def _mix_outputs(config: Any) -> Mapping[str, str]:
    return {"dataset": f"dataset/{config.format}"}


@lmforge.hookimpl
def lmforge_components() -> list[Component]:
    src = "lmforge_data.sources"
    flt = "lmforge_data.filters"
    return [
        stage("data", "curate", config=cfg.CurateConfig, factory="lmforge_data.curate:factory",
              description="Read sources, filter, deduplicate and split into a Parquet dataset",
              outputs=_curate_outputs, inputs=curate_inputs),
        stage("data", "mix", config=scfg.MixConfig, factory="lmforge_data.mix:factory",
              description="Combine datasets by weights or token budgets (up/down-sampling)",
              inputs=_mix_inputs, outputs=_mix_outputs),
        stage("train", "classifier", config=scfg.ClassifierStageConfig,
              factory="lmforge_data.classifier_stage:factory",
              description="Train a fastText-style classifier on positive/negative datasets",
              inputs={"positive": InputSlot(scfg.DATASET_KINDS, help="documents of the class "
                                            "to score high"),
                      "negative": InputSlot(scfg.DATASET_KINDS, help="documents of the class "
                                            "to score low")},
              outputs={"classifier": "classifier"}),
        Component("source", "jsonl", cfg.JsonlSourceConfig, f"{src}.files:jsonl",
                  description="JSON Lines files (path or glob)"),
        Component("source", "parquet", cfg.ParquetSourceConfig, f"{src}.files:parquet",
                  description="Parquet files (glob), streamed by record batch"),
        Component("source", "text", cfg.TextSourceConfig, f"{src}.files:text",
                  description="Plain text files: one document per file or per line"),
        Component("source", "hf", cfg.HFSourceConfig, f"{src}.hf:hf",
                  description="A Hugging Face datasets dataset (hub, builder or local folder)"),
        Component("source", "python-functions", cfg.PythonFunctionsConfig,
                  f"{src}.python_functions:python_functions",
                  description="Python files mined with ast: text, chat, preference or "
                              "multiple-choice records from functions and docstrings"),
        Component("filter", "length", cfg.LengthFilterConfig, f"{flt}.length:factory",
                  description="Drop documents outside character/word count bounds"),
        Component("filter", "gopher", cfg.GopherFilterConfig, f"{flt}.gopher:factory",
                  description="Gopher quality and repetition heuristics"),
        Component("filter", "pii", cfg.PIIFilterConfig, f"{flt}.pii:factory",
                  description="Redact e-mails, phone numbers, IP and street addresses and card "
                              "numbers"),
        Component("filter", "language", fcfg.LanguageFilterConfig, f"{flt}.language:factory",
                  description="Language ID with lingua; keep languages above a confidence"),
        Component("filter", "quality", fcfg.ClassifierFilterConfig,
                  f"{flt}.scored:quality_factory",
                  description="Keep documents a trained classifier scores within bounds"),
        Component("filter", "perplexity", fcfg.PerplexityFilterConfig,
                  f"{flt}.scored:perplexity_factory",
                  description="CCNet-style perplexity under a small LM: label, bucket, bound"),
        Component("filter", "toxicity", fcfg.ToxicityFilterConfig, f"{flt}.toxicity:factory",
                  description="Word-list/regex toxicity scores by category (and a classifier)"),
        Component("filter", "c4", fcfg.C4FilterConfig, f"{flt}.lines:c4_factory",
                  description="C4 line clean-up and page rules"),
        Component("filter", "fineweb", fcfg.FineWebFilterConfig, f"{flt}.lines:fineweb_factory",
                  description="FineWeb line punctuation, short-line, duplicate and list rules"),
        Component("executor", "local", ccfg.LocalExecutorConfig,
                  "lmforge_data.executors.local:factory",
                  description="Curation tasks on worker processes of this machine"),
        Component("executor", "ray", ccfg.RayExecutorConfig,
                  "lmforge_data.executors.ray_executor:factory",
                  description="Curation tasks on Ray Data (local, or a cluster address)"),
        Component("dedup", "exact", ccfg.ExactDedupConfig, "lmforge_data.dedup.exact:factory",
                  description="Exact duplicates of the normalised record"),
        Component("dedup", "minhash", ccfg.MinHashDedupConfig,
                  "lmforge_data.dedup.minhash:factory",
                  description="Near duplicates: MinHash LSH over word n-gram shingles"),
    ]
