"""What every benchmark shares: the result format ``run.py`` collects, the machine description,
interleaved timing and the machine's matmul throughput (the denominator of CPU MFU).

The result format (``lmforge-bench/1``, documented in ``benchmarks/README.md``): a benchmark
script that takes part in ``python benchmarks/run.py``

* says so with a module-level ``BENCH_FORMAT = "lmforge-bench/1"`` (``run.py`` reads it with
  :mod:`ast`, without importing the script) and, when it needs a GPU,
  ``BENCH_REQUIRES = "cuda"``;
* accepts ``--json PATH`` (see :func:`add_json_arg`) and then writes one JSON object there
  (:func:`emit`): ``{"format", "benchmark", "rows": [Row, ...], "meta": {...}}``.

Only this file and the standard library are imported at module level: scripts import torch
themselves, so ``run.py`` stays light.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "lmforge-bench/1"


@dataclass
class Row:
    """One line of the benchmark table.

    ``ours`` and ``peer`` are in ``unit``; ``higher_is_better`` says which way is faster (tokens/s
    vs seconds). ``ratio`` is the speed-up of lmforge over the peer (``ours / peer`` for rates,
    ``peer / ours`` for times), computed from the figures when not given. ``goal``: a minimum
    ratio (a number) or, for absolute targets, text such as ``"< 0.3 s"`` with ``goal_met`` set
    by the script. ``flops``: model FLOPs per ``unit`` of work (FLOPs per token for tokens/s,
    per step for steps/s) so that MFU = ``flops * ours / matmul peak``; ``mfu`` /
    ``peer_mfu`` when the script computed them itself. ``samples``: how many timings each median
    is over. ``notes``: one short line (what was compared, what was left out).
    """

    name: str
    unit: str
    ours: float
    peer: float | None = None
    peer_name: str = ""
    higher_is_better: bool = True
    ratio: float | None = None
    goal: float | str | None = None
    goal_met: bool | None = None
    flops: float | None = None
    dtype: str = ""
    mfu: float | None = None
    peer_mfu: float | None = None
    samples: int | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.peer:
            self.ratio = (self.ours / self.peer) if self.higher_is_better else (self.peer / self.ours)
        if self.goal_met is None and isinstance(self.goal, (int, float)) and self.ratio:
            self.goal_met = self.ratio >= self.goal


def add_json_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", type=Path, default=None, metavar="PATH",
                    help=f"also write the results to PATH in the {FORMAT} format "
                    "(what benchmarks/run.py reads)")


def emit(path: Path | None, benchmark: str, rows: Sequence[Row],
         meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The result object; written to ``path`` (atomically) when given."""
    result = {"format": FORMAT, "benchmark": benchmark, "rows": [asdict(r) for r in rows],
              "meta": dict(meta or {})}
    if path is not None:
        tmp = Path(f"{path}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, path)
    return result


# -- the machine ----------------------------------------------------------------------------------
def cpu_info() -> dict[str, Any]:
    """CPU model, cores and the vector/matrix extensions that decide CPU matmul speed."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return {"model": model, "cores": os.cpu_count(),
            "avx2": "avx2" in flags, "avx512": any(f.startswith("avx512f") for f in flags),
            "avx512_bf16": "avx512_bf16" in flags,
            "amx": any(f.startswith("amx") for f in flags),
            "flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))}


def machine_info() -> dict[str, Any]:
    """The machine as the results file records it (torch imported here, if installed)."""
    info: dict[str, Any] = {"cpu": cpu_info(), "python": platform.python_version(),
                            "platform": platform.platform(), "hostname": platform.node()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["cuda"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


# -- timing ---------------------------------------------------------------------------------------
def interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1
                ) -> dict[str, list[float]]:
    """Wall times of each function, run in turn (``a b c a b c ...``, the order rotating each
    round) so that load from other processes hits every variant alike. ``warmup`` rounds are
    run first and not recorded."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


# -- the hardware limit ---------------------------------------------------------------------------
@dataclass
class MatmulPeak:
    """Measured ``torch.mm`` throughput: ``flops_per_s`` over the whole shape mix (total FLOPs
    / total median time), and per shape."""

    dtype: str
    flops_per_s: float
    best_flops_per_s: float
    shapes: list[dict[str, Any]] = field(default_factory=list)


def model_matmul_shapes(tokens: int, dim: int, hidden: int, vocab: int, q_dim: int,
                        kv_dim: int) -> list[tuple[int, int, int, int]]:
    """``(m, k, n, count)``: the matmuls of one training step of a Llama-style layer stack and
    head on ``tokens`` rows, forward and backward (``x @ W.T``, ``dY @ W``, ``dY.T @ x``).
    ``count`` is per layer for the blocks; attention score products are left out (SDPA)."""
    shapes = []
    for n, k in ((q_dim + 2 * kv_dim, dim), (dim, q_dim), (2 * hidden, dim), (dim, hidden),
                 (vocab, dim)):
        shapes += [(tokens, k, n, 1), (tokens, n, k, 1), (n, tokens, k, 1)]
    return shapes


def matmul_peak(shapes: Sequence[tuple[int, int, int, int]], dtype: str = "fp32",
                repeats: int = 5, min_time: float = 0.05) -> MatmulPeak:
    """Median ``torch.mm`` time of every ``(m, k, n, count)`` shape (inputs made once; each
    timing repeats the product until ``min_time`` has passed); FLOPs are ``2 m k n``."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    g = torch.Generator().manual_seed(0)
    rows, total_flops, total_time, best = [], 0.0, 0.0, 0.0
    for m, k, n, count in shapes:
        a = torch.randn(m, k, generator=g).to(dt)
        b = torch.randn(k, n, generator=g).to(dt)
        torch.mm(a, b)
        reps = 1
        t = time.perf_counter()
        torch.mm(a, b)
        one = max(time.perf_counter() - t, 1e-6)
        reps = max(1, int(min_time / one))
        samples = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            samples.append((time.perf_counter() - t) / reps)
        sec = statistics.median(samples)
        flops = 2.0 * m * k * n
        rows.append({"m": m, "k": k, "n": n, "seconds": sec, "flops_per_s": flops / sec})
        total_flops += flops * count
        total_time += sec * count
        best = max(best, flops / sec)
    return MatmulPeak(dtype, total_flops / total_time, best, rows)


class MatmulProbe:
    """The machine's fp32 ``torch.mm`` throughput at a model's shapes, measured *between* a
    benchmark's own steps (call it in the interleaving like another variant), so that MFU is
    taken against the speed the machine had at that moment; on a shared machine that speed
    moves with the load. :attr:`flops_per_s` is the median over the calls."""

    def __init__(self, shapes: Sequence[tuple[int, int, int, int]]) -> None:
        import torch

        g = torch.Generator().manual_seed(0)
        self.pairs = [(torch.randn(m, k, generator=g), torch.randn(k, n, generator=g), count)
                      for m, k, n, count in shapes]
        self.flops = sum(2.0 * a.shape[0] * a.shape[1] * b.shape[1] * c for a, b, c in self.pairs)
        self.samples: list[float] = []

    def __call__(self) -> None:
        import torch

        t = time.perf_counter()
        for a, b, count in self.pairs:
            for _ in range(count):
                torch.mm(a, b)
        self.samples.append(self.flops / (time.perf_counter() - t))

    @property
    def flops_per_s(self) -> float:
        return statistics.median(self.samples)


def dense_shapes(cfg: Any, vocab: int, tokens: int) -> list[tuple[int, int, int, int]]:
    """:func:`model_matmul_shapes` for an lmforge ``DenseConfig``."""
    return model_matmul_shapes(tokens, cfg.dim, cfg.hidden_dim, vocab, cfg.n_heads * cfg.head_dim,
                               cfg.kv_heads * cfg.head_dim)


def fmt_rate(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit in ("s", "ms"):
        return f"{x:.3f} {unit}" if unit == "s" else f"{x:.1f} {unit}"
    if x >= 1e9:
        return f"{x / 1e9:,.1f} G{unit}"
    if x >= 1e4:
        return f"{x:,.0f} {unit}"
    return f"{x:,.2f} {unit}"
