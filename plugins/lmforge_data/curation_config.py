"""Config models of the curation executors and deduplicators (pydantic only: imported at
discovery). The ``type`` field is added by the spec assembler (``type: ray``, ``type: minhash``).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from lmforge import Config, ConfigValueError


# --- executors ------------------------------------------------------------------------------
class LocalExecutorConfig(Config):
    """Worker processes on this machine; one partition (or bucket, or shard) per task."""

    workers: int | None = Field(default=None, ge=1, le=1024, description="Worker processes. "
                                "Default: the stage's num_proc. 1 runs everything in the "
                                "stage's own process.")


class RayExecutorConfig(Config):
    """Ray Data: a local Ray by default, or a running cluster (``address``)."""

    address: str | None = Field(default=None, description="Ray cluster to join, e.g. 'auto' "
                                "(the cluster this machine belongs to) or "
                                "'ray://head:10001'. Default: start Ray on this machine for "
                                "the stage and stop it after. Every node needs the same "
                                "lmforge and plugins and must see the run directory at the "
                                "same path.")
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs of the local Ray "
                                 "(without address). Default: all of this machine's.")
    max_workers: int | None = Field(default=None, ge=1, description="At most this many tasks "
                                    "at once. Default: the cluster's CPU count.")
    cpus_per_task: float = Field(default=1.0, gt=0, description="CPUs Ray reserves for each "
                                 "task.")

    @model_validator(mode="after")
    def _local_or_cluster(self) -> RayExecutorConfig:
        if self.address and self.num_cpus is not None:
            raise ConfigValueError("num_cpus sizes a local Ray; a cluster at 'address' has its "
                                   "own CPUs: remove one of the two", ("num_cpus",))
        return self


# --- dedup ----------------------------------------------------------------------------------
class ExactDedupConfig(Config):
    """Exact duplicates of the normalised record (NFKC, lower case, whitespace collapsed);
    the first in read order is kept."""


class MinHashDedupConfig(Config):
    """Near duplicates by MinHash LSH over word n-gram shingles (see docs/plugins/data.md for
    the S-curve and a table of detection probabilities)."""

    ngram: int = Field(default=5, ge=1, le=64, description="Words per shingle. Default 5.")
    bands: int = Field(default=14, ge=1, le=1024, description="LSH bands b: two documents are "
                       "candidates when all rows of any one band agree. More bands: higher "
                       "recall at low similarity, more false positives. Default 14.")
    rows: int = Field(default=8, ge=1, le=256, description="Rows r per band (permutations = "
                      "bands x rows). More rows: a sharper, higher threshold (about "
                      "(1/b)^(1/r)). Default 8.")
    seed: int = Field(default=1, ge=0, description="Seed of the hash permutations.")
    lowercase_words_only: bool = Field(default=True, description="Shingle the words of the "
                                       "normalised text with punctuation removed (so edits to "
                                       "punctuation do not hide a copy). False keeps "
                                       "punctuation attached to words.")
    batch_docs: int = Field(default=512, ge=1, description="Documents hashed together in one "
                            "vectorised batch (memory: about 8 x shingles x bands x rows "
                            "bytes per batch slice).")
