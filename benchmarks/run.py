"""Run every benchmark and print one table: lmforge's figure, the peer's from the same run, the
ratio, the goal, and (training) CPU MFU against the matmul throughput measured in this run.

Benchmarks are the ``benchmarks/bench_*.py`` scripts that declare the result format
(``BENCH_FORMAT = "lmforge-bench/1"``, see ``benchmarks/README.md``); each runs in its own
process (``python bench_x.py --json FILE``), so one failing or crashing does not stop the
others, and each can also be run alone. Scripts that declare ``BENCH_REQUIRES = "cuda"`` are
skipped when torch sees no CUDA device; a script's ``BENCH_ARGS`` (a list of strings) is added to
its command line, for a size that keeps it to a few minutes here. ``bench_matmul`` runs first: its fp32/bf16 ``torch.mm``
throughput at the model's shapes is the denominator of every MFU figure.

The table is printed as Markdown (what ``docs/performance.md`` shows) and everything, with the
machine (CPU model and AVX2/AVX-512/AMX flags, cores, torch version and threads), is written to
``benchmarks/results/<machine>.json``.

    python benchmarks/run.py [--only pretrain,dpo] [--skip tokenizer] [--timeout 900]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import FORMAT, fmt_rate, machine_info  # noqa: E402

FIRST = "bench_matmul"  # the MFU denominator, measured before the rest


def declared(path: Path) -> dict[str, Any]:
    """Module-level ``BENCH_*`` constants of a script, read without importing it."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return {}
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name) and node.targets[0].id.startswith("BENCH_"):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def discover(names: set[str] | None, skip: set[str]) -> tuple[list[Path], list[str]]:
    """The scripts to run (``bench_matmul`` first) and why others are left out."""
    scripts, skipped = [], []
    cuda = None
    for path in sorted(HERE.glob("bench_*.py"), key=lambda p: (p.stem != FIRST, p.stem)):
        short = path.stem.removeprefix("bench_")
        if (names and short not in names and path.stem != FIRST) or short in skip:
            continue
        decl = declared(path)
        if decl.get("BENCH_REQUIRES") == "cuda":
            if cuda is None:
                cuda = _has_cuda()
            if not cuda:
                skipped.append(f"{path.name}: needs a CUDA GPU, none here")
                continue
        if decl.get("BENCH_FORMAT") != FORMAT:
            skipped.append(f"{path.name}: does not emit {FORMAT} (run it alone)")
            continue
        scripts.append(path)
    return scripts, skipped


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def run_one(path: Path, timeout: float, env: dict[str, str]
            ) -> tuple[dict[str, Any] | None, str, float]:
    """Run one script; its result (None on failure), the tail of its output, seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        extra = [str(a) for a in declared(path).get("BENCH_ARGS", [])]
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, str(path), "--json", str(out), *extra], env=env,
                                  capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
            log = proc.stdout + proc.stderr
            ok = proc.returncode == 0
        except subprocess.TimeoutExpired as exc:
            log = f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {timeout:.0f}s"
            ok = False
        seconds = time.perf_counter() - start
        if isinstance(log, bytes):
            log = log.decode(errors="replace")
        if not ok or not out.is_file():
            return None, log[-3000:], seconds
        return json.loads(out.read_text()), log, seconds


def add_mfu(results: list[dict[str, Any]]) -> dict[str, float]:
    """Fill ``mfu``/``peer_mfu`` of rows that give ``flops`` from ``bench_matmul``'s peaks."""
    peaks: dict[str, float] = {}
    for res in results:
        if res["benchmark"] == "matmul":
            for row in res["rows"]:
                if row["name"].startswith("torch.mm at the model's shapes"):
                    peaks[row["dtype"]] = row["ours"]
    for res in results:
        for row in res["rows"]:
            peak = peaks.get(row.get("dtype") or "fp32")
            if row.get("flops") and peak:
                if row.get("mfu") is None:
                    row["mfu"] = row["flops"] * row["ours"] / peak
                if row.get("peer") and row.get("peer_mfu") is None:
                    row["peer_mfu"] = row["flops"] * row["peer"] / peak
    return peaks


def table(results: list[dict[str, Any]]) -> str:
    head = ("| benchmark | lmforge | peer (same run) | ratio | goal | CPU MFU lmforge / peer |\n"
            "|---|---|---|---|---|---|")
    lines = [head]
    for res in results:
        for r in res["rows"]:
            peer = f"{r['peer_name']}: {fmt_rate(r['peer'], r['unit'])}" if r.get("peer") \
                else (r.get("peer_name") or "-")
            ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else "-"
            goal = r.get("goal")
            if isinstance(goal, (int, float)):
                goal = f">= {goal:g}x"
            if goal and r.get("goal_met") is not None:
                goal = f"{goal} ({'met' if r['goal_met'] else 'missed'})"
            mfu = "-"
            if r.get("mfu") is not None:
                mfu = f"{r['mfu']:.1%}" + (f" / {r['peer_mfu']:.1%}" if r.get("peer_mfu")
                                           is not None else "")
            lines.append(f"| {r['name']} | {fmt_rate(r['ours'], r['unit'])} | {peer} | {ratio} "
                         f"| {goal or '-'} | {mfu} |")
    return "\n".join(lines)


def machine_slug(info: dict[str, Any]) -> str:
    cpu = info["cpu"]
    ext = "amx" if cpu["amx"] else "avx512" if cpu["avx512"] else "avx2" if cpu["avx2"] else "cpu"
    gpu = f"-{info['cuda']}" if info.get("cuda") else ""
    name = f"{cpu['model']}-{cpu['cores']}c-{ext}{gpu}".lower()
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated names (pretrain,dpo: the part "
                    "after bench_); matmul always runs")
    ap.add_argument("--skip", default="", help="comma-separated names to leave out")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per benchmark")
    ap.add_argument("--out", type=Path, default=None,
                    help="results file (default: benchmarks/results/<machine>.json)")
    ap.add_argument("--omp-wait-policy", choices=["passive", "inherit"], default="passive",
                    help="OMP_WAIT_POLICY of the benchmark processes. passive (default): idle "
                    "OpenMP threads sleep instead of spinning; on a machine shared with other "
                    "work, spinning threads of a 2-thread torch process were measured to take "
                    "3-4x the CPU time and 2-4x the wall time of the same step. inherit: leave "
                    "the environment as it is")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    if args.omp_wait_policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    only = {n.strip() for n in args.only.split(",") if n.strip()} or None
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    scripts, skipped = discover(only, skip)
    info = machine_info()
    cpu = info["cpu"]
    print(f"machine: {cpu['model']}, {cpu['cores']} cores, AVX2 {cpu['avx2']}, AVX-512 "
          f"{cpu['avx512']}, AMX {cpu['amx']}; torch {info.get('torch')} "
          f"({info.get('torch_threads')} threads); load average {info.get('load_average')}; "
          f"OMP_WAIT_POLICY {env.get('OMP_WAIT_POLICY', '(unset)')}")
    info["omp_wait_policy"] = env.get("OMP_WAIT_POLICY")
    for s in skipped:
        print(f"skipped {s}")
    results, failures = [], []
    for path in scripts:
        print(f"running {path.name} ...", flush=True)
        res, log, seconds = run_one(path, args.timeout, env)
        if res is None:
            failures.append({"script": path.name, "log_tail": log, "seconds": seconds})
            print(f"  FAILED after {seconds:.0f}s:\n{log}", flush=True)
            continue
        res["seconds"] = round(seconds, 1)
        results.append(res)
        print(f"  done in {seconds:.0f}s", flush=True)
    peaks = add_mfu(results)
    text = table(results)
    print()
    print(text)
    if peaks:
        print("\nCPU MFU = model FLOPs per second / the torch.mm throughput at the model's "
              "shapes measured above (" + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s"
                                                    for k, v in peaks.items()) + ")")
    out = args.out or HERE / "results" / f"{machine_slug(info)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"machine": info, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
              "results": results, "failures": failures, "skipped": skipped,
              "matmul_peak_flops_per_s": peaks, "table": text}
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"\nwrote {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
