"""Config models of the data plugin's components (pydantic only: imported at discovery).

Every model here is a :class:`lmforge.Config`; the spec assembler adds the ``type`` field of
non-stage components (``type: jsonl``, ``type: gopher`` ...) and turns the ``Slot`` fields of
:class:`CurateConfig` into unions of the installed sources and filters.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from lmforge import Config, Slot
from lmforge.specpath import SpecPath, check_files

Format = Literal["text", "chat", "preference", "multiple-choice", "prompt"]

PathOrGlobs = SpecPath | list[SpecPath]
_PATH_HELP = ("A file path or glob (``**`` recurses), or a list of them; relative paths are "
              "relative to the spec file's folder. Matches are read in sorted order. "
              "`lmforge validate` checks that each matches a file.")


class _ReadsFiles(Config):
    """A source whose ``path`` names files: when validation asks for file checks
    (:data:`lmforge.specpath.CHECK_FILES`: ``lmforge validate``, ``plan``, ``run``), every path
    or glob must match a file that ``exclude`` (if any) keeps, as the stage will require."""

    @model_validator(mode="after")
    def _files_exist(self, info: ValidationInfo) -> Any:
        if check_files(info):
            from lmforge import StageInputError
            from lmforge_data.paths import expand

            try:
                expand(getattr(self, "path"), getattr(self, "exclude", ()))
            except StageInputError as exc:
                # The message goes through the context: it may contain braces ({stdlib}).
                raise PydanticCustomError("source_files", "{message}",
                                          {"message": str(exc)}) from None
        return self


# --- the stage ------------------------------------------------------------------------------
class CurateConfig(Config):
    """``data/curate``: read sources, filter, deduplicate, split and write a dataset artifact."""

    sources: list[Annotated[Any, Slot("source")]] = Field(
        min_length=1, description="Where documents come from, read in order, e.g. "
        "[{type: jsonl, path: data/*.jsonl}]. Each record must fit `format`.")
    filters: list[Annotated[Any, Slot("filter")]] = Field(
        default_factory=list, description="Filters applied in order to each document's text "
        "(for chat/preference the joined message contents, chosen and rejected; for "
        "multiple-choice the question). A filter may drop a document or modify it (PII "
        "redaction). Default: none.")
    dedup: bool | Annotated[Any, Slot("dedup")] = Field(
        default=True, description="Deduplication after filtering: true (exact duplicates of "
        "the normalised record: NFKC, lower case, whitespace collapsed), false (none), or a "
        "dedup component, e.g. {type: minhash, bands: 14, rows: 8} for near duplicates. The "
        "first document of each duplicate cluster in read order is kept.")
    executor: Annotated[Any, Slot("executor")] | None = Field(
        default=None, description="Where the plan's tasks run: {type: local, workers: N} "
        "(worker processes) or {type: ray} (Ray Data, local or a cluster at 'address'). "
        "Default: local with num_proc workers. The output is the same bytes on any executor.")
    partition_bytes: int = Field(default=32 << 20, ge=1, description="Target size of one "
                                 "partition (a task of the read phase): consecutive small "
                                 "files are grouped up to this many bytes, Parquet files are "
                                 "split by row groups. A killed run resumes from the "
                                 "partitions already done. Default 32 MiB.")
    dedup_buckets: int | None = Field(default=None, ge=1, le=4096, description="Hash buckets "
                                      "of the dedup cluster step (tasks run in parallel). "
                                      "Default: twice the executor's workers. Does not change "
                                      "the output.")
    format: Format = Field(default="text", description="Record format of the output; the "
                           "artifact kind is dataset/<format>.")
    heldout_fraction: float = Field(default=0.05, ge=0.0, lt=1.0, description="Fraction of "
                                    "documents put in the 'heldout' split, chosen by a hash of "
                                    "the normalised text (the same on every rerun).")
    split_by: Literal["content", "source"] = Field(default="content", description="What decides "
        "a record's split: 'content' hashes the normalised record; 'source' hashes the unit it "
        "came from (for python-functions and text sources: the file, relative to the glob's "
        "folder), so every record mined from one file lands in the same split and datasets "
        "derived from the same files hold out the same files. Records without a source unit "
        "fall back to content.")
    heldout_min: int = Field(default=1, ge=0, description="At least this many held-out rows "
                             "(taken from train by smallest hash) so tiny corpora still get a "
                             "held-out split; ignored when heldout_fraction is 0. Train always "
                             "keeps at least one row.")
    shard_rows: int = Field(default=100_000, ge=1, description="Rows per Parquet shard.")
    num_proc: int = Field(default=1, ge=1, le=1024, description="Worker processes of the "
                          "default local executor (partitions, dedup buckets and shards run "
                          "in parallel); output is identical to num_proc=1.")
    chunk_size: int = Field(default=256, ge=1, description="Documents filtered, hashed for "
                            "dedup and written together within a partition.")
    max_documents: int | None = Field(default=None, ge=1, description="Stop after reading this "
                                      "many documents in total (all sources). Default: all.")

    @model_validator(mode="after")
    def _sources_fit_format(self) -> Any:
        """Each source must be able to give records of ``format``: a python-functions source's
        ``mode`` equals it, and plain text files only give 'text' records."""
        from lmforge import ConfigValueError

        for i, src in enumerate(self.sources):
            get = src.get if isinstance(src, dict) else (lambda k, s=src: getattr(s, k, None))
            kind = get("type")
            if kind == "python-functions":
                mode = get("mode") or "text"
                if mode != self.format:
                    raise ConfigValueError(
                        f"source {i} (python-functions) has mode {mode!r} but the stage's format "
                        f"is {self.format!r}; set both to the same value", ("sources", i, "mode"))
            elif kind == "text" and self.format != "text":
                raise ConfigValueError(
                    f"source {i} (text) gives 'text' records but the stage's format is "
                    f"{self.format!r}; use a jsonl or parquet source, or format: text",
                    ("sources", i, "type"))
        return self


# --- sources --------------------------------------------------------------------------------
class _RemapMixin(Config):
    text_field: str | None = Field(default=None, description="Take the document text from "
                                   "this key of each record (stored as 'text'). Default: the "
                                   "record's own 'text' key.")
    fields: dict[str, str] = Field(default_factory=dict, description="Rename record keys, "
                                   "source key -> output key, e.g. {conversation: messages}.")


class JsonlSourceConfig(_RemapMixin, _ReadsFiles):
    """One JSON object per line."""

    path: PathOrGlobs = Field(description=_PATH_HELP)
    encoding: str = Field(default="utf-8", description="Text encoding of the files.")


class ParquetSourceConfig(_RemapMixin, _ReadsFiles):
    """Parquet files, streamed one record batch at a time."""

    path: PathOrGlobs = Field(description=_PATH_HELP)
    columns: list[str] | None = Field(default=None, description="Only read these columns "
                                      "(before renaming). Default: all.")
    batch_rows: int = Field(default=1024, ge=1, description="Rows per batch read at once.")


class TextSourceConfig(_ReadsFiles):
    """Plain text files: one document per file, or per non-empty line."""

    path: PathOrGlobs = Field(description=_PATH_HELP)
    mode: Literal["file", "line"] = Field(default="file", description="'file': each file is "
                                          "one document; 'line': each non-empty line is one.")
    encoding: str = Field(default="utf-8", description="Text encoding; files that do not "
                          "decode are skipped and counted (reason 'undecodable').")


class HFSourceConfig(_RemapMixin):
    """A Hugging Face ``datasets`` dataset (hub name, builder name or local folder)."""

    name: str = Field(description="Dataset name on the Hub (e.g. 'roneneldan/TinyStories'), a "
                      "builder ('json', 'parquet', 'text' with data_files) or a local folder.")
    config_name: str | None = Field(default=None, description="Dataset configuration (subset).")
    split: str = Field(default="train", description="Split to read.")
    streaming: bool = Field(default=True, description="Stream records instead of downloading "
                            "and converting the whole dataset first.")
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        default=None, description="Files for builder datasets ('json', 'parquet' ...).")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag, commit).")


DEFAULT_EXCLUDE = ["**/test/**", "**/tests/**", "**/idle_test/**", "**/test_*.py",
                   "**/site-packages/**", "**/dist-packages/**", "**/idlelib/**",
                   "**/lib2to3/**", "**/__pycache__/**"]


class PythonFunctionsConfig(_ReadsFiles):
    """Mine Python source files with ``ast`` into text, chat, preference or multiple-choice."""

    path: PathOrGlobs = Field(default="{stdlib}/**/*.py", description=_PATH_HELP + " The "
                              "placeholder {stdlib} is the running Python's standard library "
                              "folder (sysconfig 'stdlib'), so it works offline anywhere.")
    mode: Format = Field(default="text", description="'text': whole files; 'chat': user asks "
                         "for a function from its signature and docstring summary, assistant "
                         "answers with its source (docstring removed); 'preference': chosen = "
                         "the real function, rejected = a deterministic plausible-but-wrong "
                         "corruption (flipped operator, off-by-one, swapped or dropped "
                         "statement); 'multiple-choice': which function name fits the "
                         "docstring summary, the wrong choices being three other functions of "
                         "the same file (so of the same split: no choice is more familiar to a "
                         "model than the answer; files with fewer than four names give no "
                         "question); 'prompt' (coding problems): each module-level function "
                         "with doctest examples in its docstring becomes a prompt asking for "
                         "it from its signature and docstring, with tests (the docstring's "
                         "examples), entry_point and reference (the real source), kept only "
                         "when the reference passes its own doctests defined alone. Must "
                         "equal the curate stage's format.")
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE),
                               description="Glob patterns of files to skip, matched "
                               "against the path below the fixed folder of `path` ('*' stays "
                               "within a folder name, '**' spans folders). Default: test "
                               "folders, test_*.py, site-packages, idlelib, lib2to3, "
                               "__pycache__.")
    min_doc_chars: int = Field(default=20, ge=0, description="Function modes: skip functions "
                               "whose docstring summary is shorter than this.")
    max_function_chars: int = Field(default=3000, ge=1, description="Function modes: skip "
                                    "functions whose source (without docstring) is longer.")
    min_file_chars: int = Field(default=1, ge=0, description="'text' mode: skip files shorter "
                                "than this.")
    include_private: bool = Field(default=False, description="Also use functions whose name "
                                  "starts with '_' (dunder methods are always skipped).")
    corruptions: list[Literal["operator", "arguments", "swap", "drop", "name"]] = Field(
        default_factory=lambda: ["operator", "arguments", "swap", "drop", "name"], min_length=1,
        description="'preference' mode: the kinds of edit that make a rejected function — "
        "operator (flip an operator or literal), arguments (swap call arguments or operands), "
        "swap (swap two dependent statements), drop (remove a statement with an effect), name "
        "(read an undefined variable instead of a local one).")
    seed: int = Field(default=0, description="Seed of the deterministic choices (corruption "
                      "site, distractors, answer position).")
    problem_timeout_s: float = Field(default=10.0, gt=0, le=600, description="'prompt' mode: "
                                     "time limit of checking one reference against its "
                                     "doctests.")


# --- filters --------------------------------------------------------------------------------
class LengthFilterConfig(Config):
    """Drop documents outside character / word count bounds."""

    min_chars: int = Field(default=1, ge=0, description="Minimum characters (after stripping "
                           "surrounding whitespace). Default 1: drops empty documents.")
    max_chars: int | None = Field(default=None, ge=1, description="Maximum characters. "
                                  "Default: no limit.")
    min_words: int = Field(default=0, ge=0, description="Minimum whitespace-separated words.")
    max_words: int | None = Field(default=None, ge=1, description="Maximum words. Default: no "
                                  "limit.")


class GopherFilterConfig(Config):
    """Gopher quality heuristics (Rae et al. 2021, appendix A), measured as datatrove measures
    them (words are spaCy-English tokens, punctuation split off). ``null`` disables a check."""

    code: bool = Field(default=False, description="Source-code corpus: turn off the natural-"
                       "language checks (mean word length, symbol ratio, ellipsis and bullet "
                       "lines, alphabetic words, stop words, duplicate lines/paragraphs) and "
                       "the duplicated 5-10-gram checks whatever their thresholds; only the "
                       "word-count and top 2-4-gram checks stay.")
    min_words: int | None = Field(default=50, description="Minimum words, not counting "
                                  "punctuation-only tokens. Default 50.")
    max_words: int | None = Field(default=100_000, description="Maximum words. Default 100000.")
    min_mean_word_length: float | None = Field(default=3.0, description="Minimum mean word "
                                               "length in characters. Default 3.")
    max_mean_word_length: float | None = Field(default=10.0, description="Maximum mean word "
                                               "length. Default 10.")
    max_symbol_word_ratio: float | None = Field(default=0.1, description="Maximum ratio of "
                                                "'#' occurrences to words, and of '...'/'…' "
                                                "occurrences to words (each checked on its "
                                                "own; words include punctuation tokens). "
                                                "Default 0.1.")
    max_ellipsis_line_fraction: float | None = Field(default=0.3, description="Maximum fraction "
                                                     "of lines ending in '...' or '…'. Default "
                                                     "0.3.")
    max_bullet_line_fraction: float | None = Field(default=0.9, description="Maximum fraction "
                                                   "of lines starting with a bullet (• or -). "
                                                   "Default 0.9.")
    min_alpha_word_fraction: float | None = Field(default=0.8, description="Minimum fraction of "
                                                  "words (punctuation tokens included) "
                                                  "containing a letter. Default 0.8.")
    min_stop_words: int | None = Field(default=2, description="Minimum number of distinct stop "
                                       "words present from: the, be, to, of, and, that, have, "
                                       "with (lower case only). Default 2.")
    max_duplicate_line_fraction: float | None = Field(default=0.3, description="Maximum "
                                                      "fraction of lines that repeat an earlier "
                                                      "line. Default 0.3.")
    max_duplicate_line_char_fraction: float | None = Field(default=0.2, description="Maximum "
                                                           "fraction of the text's characters in "
                                                           "repeated lines. Default 0.2.")
    max_duplicate_paragraph_fraction: float | None = Field(default=0.3, description="Maximum "
                                                           "fraction of paragraphs (split on "
                                                           "blank lines) that repeat. Default "
                                                           "0.3.")
    max_duplicate_paragraph_char_fraction: float | None = Field(default=0.2, description=
                                                                "Maximum fraction of the text's "
                                                                "characters in repeated "
                                                                "paragraphs. Default 0.2.")
    max_top_ngram_char_fraction: dict[int, float] = Field(
        default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16},
        description="n -> maximum of (length of the most frequent word n-gram x its count) / "
        "characters of the text. Default {2: 0.20, 3: 0.18, 4: 0.16}; {} disables.")
    max_duplicate_ngram_char_fraction: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="n -> maximum fraction of the text's characters in repeats of a word "
        "n-gram seen earlier (scanning left to right, skipping past each repeat). Default "
        "{5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}; {} disables.")


class PIIFilterConfig(Config):
    """Redact personal data in place with typed placeholders; never drops a document."""

    email: bool = Field(default=True, description="Redact e-mail addresses as <EMAIL>.")
    phone: bool = Field(default=True, description="Redact phone numbers (+CC international, or "
                        "NANP-style 555-123-4567 / (555) 123-4567 with separators) as <PHONE>.")
    ip_address: bool = Field(default=True, description="Redact IPv4 (4 octets each <= 255, "
                             "not part of a longer dotted number, so versions like 3.11.7 are "
                             "kept, and so is a dotted quad after a version word such as "
                             "'version 3.11.2.1') and IPv6 addresses (validated; short forms "
                             "such as '1::2' "
                             "that look like slices are kept) as <IP_ADDRESS>.")
    credit_card: bool = Field(default=True, description="Redact payment-card numbers as "
                              "<CREDIT_CARD>: 13-19 digit runs (optionally grouped with spaces "
                              "or dashes) that pass the Luhn check.")
    card_require_iin: bool = Field(default=True, description="Only treat digit runs that start "
                                   "with a payment-card industry digit (2-6) as cards, so Luhn-"
                                   "valid timestamps and ids starting with 1, 7, 8, 9 or 0 are "
                                   "kept.")
    street_address: bool = Field(default=True, description="Redact street addresses as "
                                 "<ADDRESS>: house number, capitalised name and a street type "
                                 "(Street, Ave, Rd, Lane ...; optional unit and ', City, ST "
                                 "12345'), or the German 'Hauptstraße 12' form. Pattern and "
                                 "gazetteer, not a model: person names are not detected.")
