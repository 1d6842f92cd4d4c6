"""Bad specs and command lines: generated cases per class, each refused cleanly.

The promise (issue 7): for any bad spec or command line, ``lmforge validate``, ``run`` and
``plan`` exit 2 with a located message (``file:line`` and key path, or the override or option
named), never a traceback and never a hang, and nothing is written.

Cases are generated (seeded, so reproducible) per class of bad input rather than written one by
one. Every case is run through the CLI's ``main`` in-process, for each command it applies to,
and checked for: exit code 2, no traceback, the location (the spec file's line, the override or
the option), the key or the kind of problem named, no emoji or markup damage, nothing created
in the working folder (the run folder included), within a time limit.

The plugin manager is loaded once per plugin selection and reused (``_load_plugins`` is
patched): discovery is the same for every case and is tested elsewhere; it would otherwise be
most of the run time. A few cases also run as a real ``python -m lmforge`` process.
"""

from __future__ import annotations

import bz2
import copy
import gzip
import io
import lzma
import os
import random
import re
import signal
import subprocess
import sys
import traceback
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import lmforge.cli as cli
from lmforge.components import Config
from lmforge.spec.source import MAX_ALIAS_VALUES, MAX_ALIASES, MAX_DEPTH

REPO = Path(__file__).resolve().parents[2]
TOY = ["--no-autoload", "-p", "tests.core.toy_plugin"]
SPEC = "pipeline.yaml"
SEED = 20240607
CASE_SECONDS = 20  # a case slower than this counts as a hang

# -- the valid specs the cases break -------------------------------------------------------------
# Placeholders: RUN (the run folder), CORPUS (a text file), both under the test's tmp_path.
TOY_SPEC: dict[str, Any] = {
    "name": "toy",
    "run_dir": "RUN",
    "seed": 1,
    "stages": [
        {"id": "words", "kind": "data", "plugin": "count", "config": {"path": "CORPUS"}},
        {"id": "acc", "kind": "train", "plugin": "accumulate", "inputs": {"counts": "words"},
         "config": {"steps": 8, "checkpoint_every": 2, "scale": {"type": "linear",
                                                                 "factor": 1.0}}},
    ],
}

_LOOP = {"steps": 4, "batch_size": 2, "seq_len": 64,
         "optim": {"lr": 1.0e-3, "warmup_steps": 1, "betas": [0.9, 0.95]}}
REAL_SPEC: dict[str, Any] = {
    "name": "bad-inputs",
    "run_dir": "RUN",
    "seed": 0,
    "stages": [
        {"id": "corpus", "kind": "data", "plugin": "curate", "config": {
            "sources": [{"type": "python-functions", "mode": "text",
                         "path": "{stdlib}/json/*.py"}],
            "heldout_fraction": 0.1}},
        {"id": "chats", "kind": "data", "plugin": "curate", "config": {
            "format": "chat",
            "sources": [{"type": "python-functions", "mode": "chat",
                         "path": "{stdlib}/json/*.py"}]}},
        {"id": "prefs", "kind": "data", "plugin": "curate", "config": {
            "format": "preference",
            "sources": [{"type": "python-functions", "mode": "preference",
                         "path": "{stdlib}/json/*.py"}]}},
        {"id": "bpe", "kind": "tokenizer", "plugin": "bpe", "inputs": {"dataset": "corpus"},
         "config": {"vocab_size": 512}},
        {"id": "pretrain", "kind": "train", "plugin": "pretrain",
         "inputs": {"dataset": "corpus", "tokenizer": "bpe"},
         "config": {"model": {"type": "dense", "dim": 64, "n_layers": 2, "n_heads": 4,
                              "max_seq_len": 128},
                    "loop": copy.deepcopy(_LOOP)}},
        {"id": "sft", "kind": "train", "plugin": "sft",
         "inputs": {"dataset": "chats", "tokenizer": "bpe", "init": "pretrain"},
         "config": {"loop": copy.deepcopy(_LOOP)}},
        {"id": "dpo", "kind": "align", "plugin": "dpo",
         "inputs": {"dataset": "prefs", "tokenizer": "bpe", "init": "sft"},
         "config": {"beta": 0.1, "loop": copy.deepcopy(_LOOP)}},
    ],
}
REAL_IDX = {s["id"]: i for i, s in enumerate(REAL_SPEC["stages"])}
TOY_IDX = {s["id"]: i for i, s in enumerate(TOY_SPEC["stages"])}


@dataclass
class Case:
    """One bad input and what a correct refusal must show.

    ``spec`` is the spec file's content: bytes, or a function of the test folder (for the run
    folder and corpus paths). ``where`` is how the message must locate the problem: ``"line"``
    (``pipeline.yaml:<n>``, exactly ``line`` when given), ``"override"`` (the override named) or
    ``"option"`` (the option ``expect[0]`` named). ``expect`` are further substrings the output
    must contain (the key path, the kind of problem)."""

    id: str
    cls: str
    spec: bytes | Callable[[Path], bytes]
    args: list[str] = field(default_factory=list)
    where: str = "line"
    line: int | None = None
    expect: tuple[str, ...] = ()
    toy: bool = True
    commands: tuple[str, ...] = ("validate", "run", "plan")
    setup: Callable[[Path], None] | None = None


# -- spec text -----------------------------------------------------------------------------------
_RAW = "RAWVALUE"


def _dump(spec: dict[str, Any], pad: int = 0, raw: tuple[str, ...] = ()) -> str:
    """YAML text of ``spec`` (one value per line, never wrapped) after ``pad`` comment lines;
    the strings ``RAWVALUE<i>`` are replaced by the raw YAML ``raw[i]``."""
    text = yaml.safe_dump(spec, sort_keys=False, width=10**9, allow_unicode=True)
    for i, snippet in enumerate(raw):
        for form in (f"'{_RAW}{i}'", f'"{_RAW}{i}"', f"{_RAW}{i}"):
            text = text.replace(form, snippet)
    return "".join(f"# padding {i}\n" for i in range(pad)) + text


def _fill(text: str, tmp: Path) -> bytes:
    return (text.replace("RUN", str(tmp / "run")).replace("CORPUS", str(tmp / "corpus.txt"))
            .encode("utf-8"))


def _spec_fn(text: str) -> Callable[[Path], bytes]:
    return lambda tmp: _fill(text, tmp)


def _set(spec: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    cur: Any = out
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return out


def _line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in the spec")


def _pad(rng: random.Random) -> int:
    """Padding that often pushes errors to line 100 and beyond (where ':100:' became 💯)."""
    return rng.choice([0, 0, rng.randint(100, 260)])


# -- generators, one per class -------------------------------------------------------------------
def gen_encoding(rng: random.Random) -> Iterator[Case]:
    """Spec files that are not UTF-8 text, or hold control characters."""
    base = _dump(TOY_SPEC)
    raw = base.encode()
    whole = [
        ("utf16-bom", base.encode("utf-16")),
        ("utf16-be-bom", b"\xfe\xff" + base.encode("utf-16-be")),
        ("utf16-le-nobom", base.encode("utf-16-le")), ("utf16-be-nobom", base.encode("utf-16-be")),
        ("utf32-bom", base.encode("utf-32")), ("utf32-le-nobom", base.encode("utf-32-le")),
        ("gzip", gzip.compress(raw)), ("bz2", bz2.compress(raw)), ("xz", lzma.compress(raw)),
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pipeline.yaml", base)
    whole.append(("zip", buf.getvalue()))
    for name, data in whole:
        yield Case(f"encoding-{name}", "encoding", data, line=1)
    for i in range(8):
        yield Case(f"encoding-random-bytes-{i}", "encoding", rng.randbytes(rng.randint(1, 4096)))
    lines = base.splitlines(keepends=True)
    value_lines = [i for i, ln in enumerate(lines) if ": " in ln and not ln.rstrip().endswith(":")]
    for i, (char, enc) in enumerate([("é", "latin-1"), ("ü", "latin-1"), ("ß", "latin-1"),
                                     ("\u201c", "cp1252"), ("\u20ac", "cp1252"),
                                     ("ñ", "cp1252"), ("Ø", "latin-1"), ("ç", "cp1252")]):
        pad = _pad(rng)
        at = rng.choice(value_lines)
        text = _edit_line(lines, at, f": x{char}")
        data = _pad_bytes(pad) + text.encode(enc)
        yield Case(f"encoding-{enc}-{i}", "encoding", data, line=pad + at + 1,
                   expect=("not UTF-8",))
    for i, bad in enumerate([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                             b"\x80", b"\xe2\x82", b"\xf4\x90\x80\x80"]):
        pad = _pad(rng)
        at = rng.choice(value_lines)
        data = (_pad_bytes(pad) + "".join(lines[:at]).encode()
                + lines[at].encode().replace(b": ", b": x" + bad, 1)
                + "".join(lines[at + 1:]).encode())
        yield Case(f"encoding-invalid-utf8-{i}", "encoding", data, line=pad + at + 1,
                   expect=("not UTF-8",))
    controls = [chr(c) for c in [*range(1, 9), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]]
    controls += ["\ufffe", "\uffff", "\x00"]
    for i, char in enumerate(rng.sample(controls, 16)):
        pad = _pad(rng)
        at = rng.choice(value_lines)
        text = _edit_line(lines, at, f": a{char}b")
        yield Case(f"encoding-control-U+{ord(char):04X}-{i}", "encoding",
                   _pad_bytes(pad) + text.encode("utf-8"), line=pad + at + 1)


def _edit_line(lines: list[str], at: int, new: str) -> str:
    """The text with the first ': ' of line ``at`` (0-based) replaced by ``new``."""
    return "".join(lines[:at]) + lines[at].replace(": ", new, 1) + "".join(lines[at + 1:])


def _pad_bytes(n: int) -> bytes:
    return "".join(f"# padding {i}\n" for i in range(n)).encode()


def gen_aliases(rng: random.Random) -> Iterator[Case]:
    """Alias bombs (billion laughs), too many aliases, recursive and too-deep aliases."""
    for i in range(10):
        width, quoted = rng.randint(3, 12), rng.random() < 0.5
        depth = 1
        while width ** depth <= MAX_ALIAS_VALUES * 2:
            depth += 1
        depth += rng.randint(0, 6)
        leaf = '"lol"' if quoted else "lol"
        defs = [f"l0: &l0 [{', '.join([leaf] * width)}]"]
        defs += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * width)}]" for k in range(1, depth)]
        pad = _pad(rng)
        text = _dump(TOY_SPEC, pad) + "bomb:\n" + "".join(f"  {d}\n" for d in defs)
        yield Case(f"alias-bomb-w{width}-d{depth}-{i}", "aliases", _spec_fn(text),
                   expect=("alias",))
    for i in range(4):  # the same as mappings
        width = rng.randint(4, 10)
        defs = ["m0: &m0 {" + ", ".join(f"k{j}: x" for j in range(width)) + "}"]
        defs += ["m%d: &m%d {" % (k, k) + ", ".join(f"k{j}: *m{k - 1}" for j in range(width)) + "}"
                 for k in range(1, 12)]
        text = _dump(TOY_SPEC) + "bomb:\n" + "".join(f"  {d}\n" for d in defs)
        yield Case(f"alias-bomb-mapping-w{width}-{i}", "aliases", _spec_fn(text), expect=("alias",))
    for i in range(3):
        n = MAX_ALIASES + rng.randint(1, 3000)
        text = _dump(TOY_SPEC) + "one: &one 1\nmany: [" + ", ".join(["*one"] * n) + "]\n"
        yield Case(f"alias-count-{n}", "aliases", _spec_fn(text), expect=("alias",))
    for i, snippet in enumerate(["&r [*r]", "&r {a: *r}", "&r [1, [2, [3, *r]]]",
                                 "&r {a: [b, {c: *r}]}"]):
        text = _dump(TOY_SPEC) + f"rec: {snippet}\n"
        yield Case(f"alias-recursive-{i}", "aliases", _spec_fn(text), expect=("alias *r",))
    for i in range(3):  # each anchor shallow, the expansion too deep
        chunk = rng.randint(20, 40)
        defs = ["d0: &d0 " + "[" * chunk + "1" + "]" * chunk]
        defs += [f"d{k}: &d{k} " + "[" * chunk + f"*d{k - 1}" + "]" * chunk for k in range(1, 6)]
        text = _dump(TOY_SPEC) + "deep:\n" + "".join(f"  {d}\n" for d in defs)
        yield Case(f"alias-deep-{chunk}-{i}", "aliases", _spec_fn(text),
                   expect=(f"more than {MAX_DEPTH} levels",))
    for i in range(3):  # a bomb in an override value
        width = rng.randint(5, 10)
        value = "[" + ", ".join([f"&a0 [{', '.join(['1'] * width)}]"]
                                + [f"&a{k} [{', '.join([f'*a{k - 1}'] * width)}]"
                                   for k in range(1, 9)]) + "]"
        yield Case(f"alias-bomb-override-{i}", "aliases", _spec_fn(_dump(TOY_SPEC)),
                   args=[f"acc.scale.factor={value}"], where="override", expect=("alias",))


def gen_nesting(rng: random.Random) -> Iterator[Case]:
    """Values nested far deeper than any spec (RecursionError before)."""
    depths = [MAX_DEPTH + 1, MAX_DEPTH + 2, 100, 500, 1000, 3000, 10_000]
    for i, depth in enumerate(depths):
        text = _dump(_set(TOY_SPEC, ("stages", 1, "config", "scale", "factor"), f"{_RAW}0"),
                     _pad(rng), raw=("[" * depth + "1" + "]" * depth,))
        yield Case(f"nesting-flow-seq-{depth}", "nesting", _spec_fn(text),
                   expect=("nested more than",))
    for i, depth in enumerate(rng.sample(range(MAX_DEPTH + 1, 2000), 4)):
        text = _dump(TOY_SPEC) + "x: " + "{a: " * depth + "1" + "}" * depth + "\n"
        yield Case(f"nesting-flow-map-{depth}", "nesting", _spec_fn(text),
                   expect=("nested more than",))
    for i, depth in enumerate([MAX_DEPTH + 1, 120, 300]):
        block = "x:\n" + "".join("  " * (k + 1) + "a:\n" for k in range(depth)) \
            + "  " * (depth + 1) + "1\n"
        yield Case(f"nesting-block-map-{depth}", "nesting", _spec_fn(_dump(TOY_SPEC) + block),
                   expect=("nested more than",))
    for i, depth in enumerate([MAX_DEPTH + 1, 400]):
        yield Case(f"nesting-block-seq-{depth}", "nesting",
                   _spec_fn(_dump(TOY_SPEC) + "x:\n  " + "- " * depth + "1\n"),
                   expect=("nested more than",))
    for i, depth in enumerate([MAX_DEPTH + 1, 2000, 20_000]):
        yield Case(f"nesting-override-{depth}", "nesting", _spec_fn(_dump(TOY_SPEC)),
                   args=["acc.scale=" + "[" * depth + "]" * depth], where="override",
                   expect=("nested more than",))
    yield Case("nesting-override-key", "nesting", _spec_fn(_dump(TOY_SPEC)),
               args=["acc." + ".".join(["a"] * 300) + "=1"], where="override")


_NOT_NAMES: list[Any] = [7, -1, 0, 3.5, True, False, [1], ["count"], {"a": 1}, {"count": None},
                         [[]], {}, []]


def gen_names(rng: random.Random) -> Iterator[Case]:
    """A non-string where a name is expected (crashed in the "did you mean" code)."""
    targets = [(("stages", 0, "plugin"), "words.plugin", "stages[0].plugin"),
               (("stages", 1, "plugin"), "acc.plugin", "stages[1].plugin"),
               (("stages", 0, "kind"), "words.kind", "stages[0].kind"),
               (("stages", 1, "kind"), "acc.kind", "stages[1].kind"),
               (("stages", 1, "config", "scale", "type"), "acc.scale.type",
                "stages[1].config.scale"),
               (("stages", 1, "inputs", "counts"), "acc.inputs.counts", "stages[1].inputs"),
               (("stages", 0, "id"), "stages.0.id", "stages[0].id"),
               (("stages", 1, "inputs"), "acc.inputs", "stages[1].inputs")]
    for i in range(36):
        path, override, key = rng.choice(targets)
        value = rng.choice(_NOT_NAMES)
        if path[-1] == "inputs" and isinstance(value, dict) and value:
            value = {7: "words"}
        if rng.random() < 0.5:
            text = _dump(_set(TOY_SPEC, path, value), _pad(rng))
            yield Case(f"names-file-{override}-{i}", "names", _spec_fn(text), expect=(key,))
        else:
            flow = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
            flow = flow.removesuffix("\n...").strip()
            yield Case(f"names-override-{override}-{i}", "names", _spec_fn(_dump(TOY_SPEC)),
                       args=[f"{override}={flow}"], where="override", expect=(key,))


def gen_big_ints(rng: random.Random) -> Iterator[Case]:
    """Integers beyond int64 or Python's int-to-str limit (crashed, or failed at run time)."""
    literals = [str(2**63), str(-(2**63) - 1), str(10**19), str(10**30), "9" * 5000,
                "-" + "9" * 4301, "9_223_372_036_854_775_808", "0x" + "f" * 40,
                "0b" + "1" * 100, "0" + "7" * 40, ":".join(["59"] * 30), "1" + "0" * 100]
    targets = [(("seed",), "seed"), (("stages", 1, "config", "steps"), "acc.steps"),
               (("stages", 1, "config", "checkpoint_every"), "acc.checkpoint_every"),
               (("stages", 1, "config", "crash_at"), "acc.crash_at")]
    for i, literal in enumerate(literals):
        path, override = targets[i % len(targets)]
        text = _dump(_set(TOY_SPEC, path, f"{_RAW}0"), _pad(rng), raw=(literal,))
        yield Case(f"bigint-file-{i}", "bigint", _spec_fn(text), expect=("64-bit",))
        path, override = rng.choice(targets)
        yield Case(f"bigint-override-{i}", "bigint", _spec_fn(_dump(TOY_SPEC)),
                   args=[f"{override}={literal}"], where="override", expect=("64-bit",))
    for i, value in enumerate(["1.0e+30", "-1.0e+30", "1.0e+19", "1e30",
                               "'99999999999999999999'", "'-9223372036854775809'"]):
        yield Case(f"bigint-as-float-{i}", "bigint", _spec_fn(_dump(TOY_SPEC)),
                   args=[f"acc.steps={value}"], where="override",
                   expect=("stages[1].config.steps: ",))
    yield Case("bigint-real-steps", "bigint", _spec_fn(_dump(REAL_SPEC)), toy=False,
               args=[f"pretrain.loop.steps={10**25}"], where="override")


_NON_FINITE = [".inf", "-.inf", ".nan", ".NaN", ".Inf", "1e999", "-1e999", "+.inf", ".NAN"]
_FLOAT_FIELDS = [
    ("pretrain", ("loop", "optim", "lr")), ("pretrain", ("loop", "optim", "eps")),
    ("pretrain", ("loop", "optim", "weight_decay")), ("pretrain", ("loop", "optim", "grad_clip")),
    ("pretrain", ("loop", "optim", "min_lr_ratio")), ("pretrain", ("model", "rope_theta")),
    ("pretrain", ("model", "norm_eps")), ("pretrain", ("model", "init_std")),
    ("sft", ("loop", "optim", "lr")), ("dpo", ("beta",)), ("dpo", ("label_smoothing",)),
    ("dpo", ("loop", "optim", "lr")), ("corpus", ("heldout_fraction",)),
]


def gen_non_finite(rng: random.Random) -> Iterator[Case]:
    """``inf``/``nan`` in float fields, in the file and as overrides."""
    for i in range(26):
        stage, key = rng.choice(_FLOAT_FIELDS)
        value = rng.choice(_NON_FINITE)
        dotted = ".".join(key)
        if i % 2:
            path = ("stages", REAL_IDX[stage], "config", *key)
            text = _dump(_set(REAL_SPEC, path, f"{_RAW}0"), _pad(rng), raw=(value,))
            yield Case(f"nonfinite-file-{stage}.{dotted}-{i}", "nonfinite", _spec_fn(text),
                       toy=False, expect=(dotted, "finite"))
        else:
            yield Case(f"nonfinite-override-{stage}.{dotted}-{i}", "nonfinite",
                       _spec_fn(_dump(REAL_SPEC)), toy=False, args=[f"{stage}.{dotted}={value}"],
                       where="override", expect=(dotted, "finite"))
    for i, value in enumerate(rng.sample(_NON_FINITE, 3)):
        for b in (0, 1):
            betas = ["0.9", "0.95"]
            betas[b] = value
            yield Case(f"nonfinite-betas{b}-{i}", "nonfinite", _spec_fn(_dump(REAL_SPEC)),
                       toy=False, args=[f"sft.loop.optim.betas=[{', '.join(betas)}]"],
                       where="override", expect=("betas", "finite"))
    yield Case("nonfinite-toy-factor", "nonfinite", _spec_fn(_dump(TOY_SPEC)),
               args=["acc.scale.factor=.nan"], where="override", expect=("factor", "finite"))


def gen_betas(rng: random.Random) -> Iterator[Case]:
    """Adam betas outside [0, 1)."""
    bad = [1.0, 1.5, 2.0, -0.1, -1e-9, 10.0, 1.0000001]
    for i in range(12):
        stage = rng.choice(["pretrain", "sft", "dpo"])
        betas = [0.9, 0.95]
        which = rng.randint(0, 1)
        betas[which] = rng.choice(bad)
        if i % 2:
            path = ("stages", REAL_IDX[stage], "config", "loop", "optim", "betas")
            yield Case(f"betas-file-{stage}-{i}", "betas",
                       _spec_fn(_dump(_set(REAL_SPEC, path, betas), _pad(rng))), toy=False,
                       expect=(f"betas[{which}]",))
        else:
            yield Case(f"betas-override-{stage}-{i}", "betas", _spec_fn(_dump(REAL_SPEC)),
                       toy=False, args=[f"{stage}.loop.optim.betas=[{betas[0]}, {betas[1]}]"],
                       where="override", expect=(f"betas[{which}]",))


def gen_sizes(rng: random.Random) -> Iterator[Case]:
    """Sizes no machine can allocate: they must fail validation, not the run."""
    model = ("stages", REAL_IDX["pretrain"], "config", "model")
    loop = ("stages", REAL_IDX["pretrain"], "config", "loop")
    variants: list[tuple[str, tuple[Any, ...], Any, str]] = [
        ("dim", model, {"type": "dense", "dim": 2**17, "n_layers": 2, "n_heads": 4,
                        "max_seq_len": 128}, "model.dim"),
        ("dim-huge", model, {"type": "dense", "dim": 10**9, "n_layers": 2, "n_heads": 4,
                             "max_seq_len": 128}, "model.dim"),
        ("layers", model, {"type": "dense", "dim": 64, "n_layers": 10**6, "n_heads": 4,
                           "max_seq_len": 128}, "model.n_layers"),
        ("ffn", model, {"type": "dense", "dim": 64, "n_layers": 2, "n_heads": 4,
                        "ffn_hidden": 2**24, "max_seq_len": 128}, "model.ffn_hidden"),
        ("multiple-of", model, {"type": "dense", "dim": 64, "n_layers": 2, "n_heads": 4,
                                "multiple_of": 2**40, "max_seq_len": 128}, "model.multiple_of"),
        ("max-seq-len", model, {"type": "dense", "dim": 64, "n_layers": 2, "n_heads": 4,
                                "max_seq_len": 2**32}, "model.max_seq_len"),
        ("experts", model, {"type": "moe", "dim": 64, "n_layers": 2, "n_heads": 4,
                            "n_experts": 10**6, "max_seq_len": 128}, "model.n_experts"),
        ("batch", loop, {**_LOOP, "batch_size": 2**30}, "loop.batch_size"),
        ("micro-batch-tokens", loop, {**_LOOP, "batch_size": 2**20, "seq_len": 2**9},
         "micro-batch"),
    ]
    for name, path, value, expect in variants:
        yield Case(f"sizes-{name}", "sizes", _spec_fn(_dump(_set(REAL_SPEC, path, value),
                                                             _pad(rng))),
                   toy=False, expect=(expect,))
    for i in range(8):  # every field within bounds, the parameter count beyond any machine
        dim = rng.choice([32768, 49152, 65536])
        layers = rng.randint(10**13 // (12 * dim * dim) + 2, 1024)
        value = {"type": "dense", "dim": dim, "n_layers": layers, "n_heads": 64,
                 "max_seq_len": 128}
        yield Case(f"sizes-parameters-{dim}x{layers}", "sizes",
                   _spec_fn(_dump(_set(REAL_SPEC, model, value))), toy=False,
                   expect=("parameters",))
    for i, (override, key) in enumerate([("bpe.vocab_size=99999999", "config.vocab_size"),
                                         (f"bpe.vocab_size={2**40}", "config.vocab_size"),
                                         ("pretrain.num_proc=100000", "config.num_proc"),
                                         ("corpus.num_proc=10000000", "config.num_proc"),
                                         ("sft.loop.seq_len=4294967296", "loop.seq_len")]):
        yield Case(f"sizes-override-{key}-{i}", "sizes", _spec_fn(_dump(REAL_SPEC)), toy=False,
                   args=[override], where="override", expect=(key,))


def gen_seq_len(rng: random.Random) -> Iterator[Case]:
    """``seq_len`` longer than the model's ``max_seq_len``, the init model's included."""
    for i in range(4):
        seq = rng.randint(129, 2**16)
        path = ("stages", REAL_IDX["pretrain"], "config", "loop", "seq_len")
        yield Case(f"seqlen-pretrain-file-{seq}", "seq_len",
                   _spec_fn(_dump(_set(REAL_SPEC, path, seq), _pad(rng))), toy=False,
                   expect=("loop.seq_len", "max_seq_len"))
        yield Case(f"seqlen-pretrain-override-{seq}", "seq_len", _spec_fn(_dump(REAL_SPEC)),
                   toy=False, args=[f"pretrain.loop.seq_len={seq}"], where="override",
                   expect=("loop.seq_len", "max_seq_len"))
    for i in range(4):  # the init model (another stage's architecture) is too short
        seq = rng.randint(129, 4096)
        path = ("stages", REAL_IDX["sft"], "config", "loop", "seq_len")
        yield Case(f"seqlen-init-file-{seq}", "seq_len",
                   _spec_fn(_dump(_set(REAL_SPEC, path, seq), _pad(rng))), toy=False,
                   expect=("init model", "'pretrain'", "seq_len"))
        yield Case(f"seqlen-init-override-{seq}", "seq_len", _spec_fn(_dump(REAL_SPEC)),
                   toy=False, args=[f"sft.loop.seq_len={seq}"], where="override",
                   expect=("init model", "'pretrain'"))
    for i in range(2):  # shrinking the upstream model makes the downstream stage's seq_len bad
        max_len = rng.randint(8, 63)
        path = ("stages", REAL_IDX["pretrain"], "config", "model", "max_seq_len")
        yield Case(f"seqlen-init-shrunk-{max_len}", "seq_len",
                   _spec_fn(_dump(_set(REAL_SPEC, path, max_len))), toy=False,
                   expect=("max_seq_len",))


def gen_data_mode(rng: random.Random) -> Iterator[Case]:
    """A data source that cannot give records of the stage's format."""
    formats = ["text", "chat", "preference", "multiple-choice"]
    for i in range(10):
        stage = rng.choice(["corpus", "chats", "prefs"])
        fmt = REAL_SPEC["stages"][REAL_IDX[stage]]["config"].get("format", "text")
        mode = rng.choice([f for f in formats if f != fmt])
        if i % 2:
            path = ("stages", REAL_IDX[stage], "config", "sources", 0, "mode")
            yield Case(f"datamode-file-{stage}-{mode}-{i}", "data_mode",
                       _spec_fn(_dump(_set(REAL_SPEC, path, mode), _pad(rng))), toy=False,
                       expect=("sources[0].mode", repr(fmt)))
        else:
            yield Case(f"datamode-override-{stage}-{mode}-{i}", "data_mode",
                       _spec_fn(_dump(REAL_SPEC)), toy=False,
                       args=[f"{stage}.sources.0.mode={mode}"], where="override",
                       expect=("sources[0].mode",))
    for i, fmt in enumerate(["chat", "preference", "multiple-choice"]):
        path = ("stages", REAL_IDX["corpus"], "config")
        cfg = {"format": fmt, "sources": [{"type": "text", "path": "CORPUS"}]}
        yield Case(f"datamode-text-source-{fmt}", "data_mode",
                   _spec_fn(_dump(_set(REAL_SPEC, path, cfg))), toy=False,
                   expect=("sources[0]",))


def gen_ids(rng: random.Random) -> Iterator[Case]:
    """Stage ids and pipeline names that cannot be folder names."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in range(8):
        n = rng.choice([65, 100, 255, 256, 300, 1000, rng.randint(66, 5000)])
        sid = "s" + "".join(rng.choice(letters) for _ in range(n - 1))
        spec = _set(TOY_SPEC, ("stages", 0, "id"), sid)
        spec = _set(spec, ("stages", 1, "inputs", "counts"), sid)
        yield Case(f"ids-long-{n}-{i}", "ids", _spec_fn(_dump(spec, _pad(rng))),
                   expect=("at most 64",))
    for i, sid in enumerate(["a b", "a/b", "../x", "a.b", "1abc", "-x", "é", "x\ty", "", "a:b",
                             "a\\b", "_x"]):
        spec = _set(TOY_SPEC, ("stages", 0, "id"), sid)
        spec = _set(spec, ("stages", 1, "inputs", "counts"), sid)
        yield Case(f"ids-charset-{i}", "ids", _spec_fn(_dump(spec)),
                   expect=("stages[0].id: ",))
    for i in range(3):
        n = rng.randint(65, 400)
        yield Case(f"ids-long-override-{n}", "ids", _spec_fn(_dump(TOY_SPEC)),
                   args=["stages.1.id=" + "x" * n], where="override", expect=("at most 64",))
    for i, name in enumerate(["../escape", "a/b", "/abs", ".hidden", "x" * 101, "x" * 300, "",
                              " lead", "-dash", "tab\there"]):
        spec = _set(TOY_SPEC, ("name",), name)
        del spec["run_dir"]  # the name is then the run folder
        yield Case(f"ids-name-{i}", "ids", _spec_fn(_dump(spec)), expect=(": name: ",))


def gen_options(rng: random.Random) -> Iterator[Case]:
    """--only / --until / --force naming no stage (exited 1)."""
    names = ["nope", "word", "acc2", "ACC", "[/red]", "[bold]x", ":100:", "wörds", "a" * 300,
             "words.counts", " words", ""]
    for i in range(18):
        option = rng.choice(["--only", "--until", "--force"])
        name = names[i % len(names)]
        args = [option, name]
        if option == "--force" and rng.random() < 0.5:
            args = ["--force", "words", *args]
        yield Case(f"options-{option[2:]}-{i}", "options", _spec_fn(_dump(TOY_SPEC)),
                   args=[*args, "-q"], where="option", expect=(option,), commands=("run",))


def gen_run_dir(rng: random.Random) -> Iterator[Case]:
    """A run folder that is a regular file, or lies under one."""

    def make_file(tmp: Path) -> None:
        (tmp / "blocker").write_text("a file, not a folder\n")

    for i in range(12):
        depth = rng.randint(0, 3)
        rel = "/".join(["blocker", *[f"sub{k}" for k in range(depth)]])
        how = ["spec", "override", "option"][i % 3]
        commands = ("run", "plan")
        if how == "spec":
            spec = _set(TOY_SPEC, ("run_dir",), f"TMPDIR/{rel}")
            yield Case(f"rundir-spec-depth{depth}-{i}", "run_dir",
                       _spec_fn(_dump(spec, _pad(rng))), expect=("run_dir", "blocker"),
                       commands=commands, setup=make_file)
        elif how == "override":
            yield Case(f"rundir-override-depth{depth}-{i}", "run_dir", _spec_fn(_dump(TOY_SPEC)),
                       args=[f"run_dir=TMPDIR/{rel}"], where="override", expect=("blocker",),
                       commands=commands, setup=make_file)
        else:
            yield Case(f"rundir-option-depth{depth}-{i}", "run_dir", _spec_fn(_dump(TOY_SPEC)),
                       args=["--run-dir", f"TMPDIR/{rel}"], where="option",
                       expect=("--run-dir", "blocker"), commands=commands, setup=make_file)
    for i, n in enumerate([256, 300, 1000]):
        yield Case(f"rundir-name-too-long-{n}", "run_dir", _spec_fn(_dump(TOY_SPEC)),
                   args=[f"run_dir=TMPDIR/{'r' * n}"], where="override", expect=("255",),
                   commands=("run", "plan"))


def gen_display(rng: random.Random) -> Iterator[Case]:
    """User text that rich would turn into emoji or markup: it must print as written."""
    keys = [":100:", "x:100:", ":smile:", "[bold]k", "[/]", "[red]x[/red]", ":thumbs_up:",
            "a[/b]"]
    for i, key in enumerate(keys):
        spec = _set(TOY_SPEC, ("stages", 1, "config", key), 1)
        yield Case(f"display-key-{i}", "display", _spec_fn(_dump(spec, rng.randint(100, 200))),
                   expect=(key,))
    for i, value in enumerate([":100:", "[bold]x[/bold]", "[/]"]):
        yield Case(f"display-value-{i}", "display", _spec_fn(_dump(TOY_SPEC)),
                   args=[f"acc.steps={value}"], where="override", expect=(value,))


GENERATORS: dict[str, Callable[[random.Random], Iterator[Case]]] = {
    "encoding": gen_encoding, "aliases": gen_aliases, "nesting": gen_nesting,
    "names": gen_names, "bigint": gen_big_ints, "nonfinite": gen_non_finite, "betas": gen_betas,
    "sizes": gen_sizes, "seq_len": gen_seq_len, "data_mode": gen_data_mode, "ids": gen_ids,
    "options": gen_options, "run_dir": gen_run_dir, "display": gen_display,
}


def generate() -> list[Case]:
    cases: list[Case] = []
    for name, gen in GENERATORS.items():
        cases += list(gen(random.Random(f"{SEED}-{name}")))
    return cases


CASES = generate()


# -- running a case ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_plugins() -> Iterator[None]:
    """Load each plugin selection once for the whole module (see the module docstring)."""
    original = cli._load_plugins
    cache: dict[Any, Any] = {}

    def cached(args: Any) -> Any:
        key = (args.no_autoload, tuple(args.plugin_modules), args.allow)
        if key not in cache:
            cache[key] = original(args)
        return cache[key]

    cli._load_plugins = cached
    try:
        yield
    finally:
        cli._load_plugins = original


class _Hang(Exception):
    pass


def _raise_hang(signum: int, frame: Any) -> None:
    raise _Hang(f"no answer within {CASE_SECONDS} s")


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[Any, str]:
    """Exit code and output of ``lmforge argv`` in-process; a raised exception or a hang is
    reported as the traceback text (which the checks then refuse)."""
    old = signal.signal(signal.SIGALRM, _raise_hang)
    signal.alarm(CASE_SECONDS)
    try:
        rc: Any = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code
    except BaseException:  # noqa: BLE001 - exactly what must not happen
        rc = "raised"
        print(traceback.format_exc(), file=sys.stderr)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out = capsys.readouterr()
    return rc, out.out + out.err


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _materialise(case: Case, tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "corpus.txt").write_text("one two two three three three\n")
    if case.setup:
        case.setup(tmp)
    data = case.spec(tmp) if callable(case.spec) else case.spec
    data = data.replace(b"TMPDIR", str(tmp).encode())
    spec = tmp / SPEC
    spec.write_bytes(data)
    args = [a.replace("TMPDIR", str(tmp)) for a in case.args]
    return spec, args


def _located(case: Case, out: str, args: list[str]) -> None:
    if case.where == "line":
        lines = [int(m) for m in re.findall(re.escape(SPEC) + r":(\d+)", out)]
        assert lines, f"no {SPEC}:<line> in the message:\n{out}"
        if case.line is not None:
            assert case.line in lines, f"expected line {case.line}, got {lines}:\n{out}"
    elif case.where == "override":
        key = args[0].split("=", 1)[0]
        assert re.search(r"override ['\"]" + re.escape(key[:40]), out), \
            f"the override is not named:\n{out}"
    else:
        assert case.expect[0] in out, f"option {case.expect[0]} not named:\n{out}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str], shared_plugins: None
                                      ) -> None:
    monkeypatch.chdir(tmp_path)  # a default run folder (runs/<name>) would land here
    spec, args = _materialise(case, tmp_path)
    before = _tree(tmp_path)
    plugins = TOY if case.toy else []
    for command in case.commands:
        rc, out = _run_cli([*plugins, command, str(spec), *args], capsys)
        assert "Traceback" not in out, out
        assert rc == 2, f"{command}: exit {rc}, expected 2:\n{out}"
        _located(case, out, args)
        for text in case.expect:
            assert text in out, f"{command}: {text!r} not in the message:\n{out}"
        assert "\N{HUNDRED POINTS SYMBOL}" not in out, out  # ':100:' printed as an emoji
        assert _tree(tmp_path) == before, f"{command} wrote {_tree(tmp_path) - before}"
        assert not (tmp_path / "run").exists()


def test_enough_distinct_cases_in_every_class() -> None:
    assert len(CASES) >= 200
    assert len({c.id for c in CASES}) == len(CASES)
    per_class: dict[str, int] = {}
    for c in CASES:
        per_class[c.cls] = per_class.get(c.cls, 0) + 1
    assert set(per_class) == set(GENERATORS), per_class
    assert min(per_class.values()) >= 5, per_class
    again = generate()  # seeded: the same cases every run
    assert [c.id for c in again] == [c.id for c in CASES]


# -- the same through a real process -------------------------------------------------------------
@pytest.mark.parametrize("cls", ["encoding", "aliases", "nesting", "options", "run_dir"])
def test_real_process_exit_code(cls: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.cls == cls and c.toy)
    spec, args = _materialise(case, tmp_path)
    before = _tree(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "lmforge", *TOY, case.commands[0], str(spec),
                           *args], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _tree(tmp_path) == before


# -- the core bound behind the config checks ------------------------------------------------------
def test_config_refuses_integers_beyond_int64_and_non_finite_floats() -> None:
    from pydantic import ValidationError

    class Sizes(Config):
        n: int = 1
        ns: list[int] = []
        x: float = 1.0

    for kwargs, loc in [({"n": 2**63}, ("n",)), ({"n": -(2**63) - 1}, ("n",)),
                        ({"ns": [1, 2**70]}, ("ns",)), ({"x": float("inf")}, ("x",)),
                        ({"x": float("nan")}, ("x",))]:
        with pytest.raises(ValidationError) as info:
            Sizes(**kwargs)
        assert info.value.errors()[0]["loc"] == loc
    assert Sizes(n=2**63 - 1, ns=[-(2**63)]).n == 2**63 - 1
