"""Registration of the data plugin's components (imported at discovery: keep it light)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lmforge
from lmforge import Component, stage
from lmforge_data import config as cfg
from lmforge_data import curation_config as ccfg


def _curate_outputs(config: Any) -> Mapping[str, str]:
    return {"dataset": f"dataset/{config.format}"}


@lmforge.hookimpl
def lmforge_components() -> list[Component]:
    src = "lmforge_data.sources"
    flt = "lmforge_data.filters"
    return [
        stage("data", "curate", config=cfg.CurateConfig, factory="lmforge_data.curate:factory",
              description="Read sources, filter, deduplicate and split into a Parquet dataset",
              outputs=_curate_outputs),
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
                  description="Redact e-mails, phone numbers, IP addresses and card numbers"),
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
