"""Sandbox throughput: programs per second through the ``subprocess`` sandbox against the peer,
a bare ``subprocess.run([python, "-I", "-S", "-c", src])`` with no limits, no namespaces and no
work directory (the same small environment), on the same thread pool.

Two workloads: a trivial program (``pass``: pure start-up cost) and a doctest check as
``python-checks`` and ``pass-at-k`` run it (:func:`lmforge.codecheck.doctest_program`: the
harness imports ``doctest``). Prints programs/s for both and the ratio sandbox / bare.

    python benchmarks/bench_sandbox.py [--n 200] [--workers 4] [--isolation auto] [--json out.json]

No goal: the sandbox's isolation costs something; the figure says how much.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Row, add_json_arg, emit, machine_info  # noqa: E402

from lmforge.codecheck import doctest_program, new_nonce, parse_report
from lmforge.sandbox import SandboxJob, run_many
from lmforge_rewards.config import SubprocessSandboxConfig
from lmforge_rewards.sandbox import SubprocessSandbox

SOLUTION = "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}
BENCH_FORMAT = "lmforge-bench/1"
TESTS = ">>> clamp(5, 0, 3)\n3\n>>> clamp(-1, 0, 3)\n0\n>>> clamp(2, 0, 3)\n2\n"


def bare(jobs: list[SandboxJob], workers: int) -> list[str]:
    def one(job: SandboxJob) -> str:
        return subprocess.run([sys.executable, "-I", "-S", "-c", job.source], input=job.stdin,
                              capture_output=True, text=True, timeout=60, env=ENV,
                              cwd=tempfile.gettempdir()).stdout

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, jobs))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="programs per measurement")
    ap.add_argument("--workers", type=int, default=4, help="runs at once (both sides)")
    ap.add_argument("--isolation", default="auto", choices=["auto", "namespaces", "process"])
    add_json_arg(ap)
    args = ap.parse_args(argv)
    sb = SubprocessSandbox(SubprocessSandboxConfig(max_concurrent=args.workers,
                                                   isolation=args.isolation))
    print(f"{sb.describe()}\n")
    nonces = [new_nonce() for _ in range(args.n)]
    workloads = {
        "pass": [SandboxJob("pass") for _ in range(args.n)],
        "doctest": [SandboxJob(doctest_program(SOLUTION, TESTS, "clamp"), stdin=n + "\n")
                    for n in nonces],
    }
    print(f"{'workload':<10}{'sandbox /s':>12}{'bare /s':>10}{'ratio':>8}")
    rows = []
    for name, jobs in workloads.items():
        t = time.perf_counter()
        results = run_many(sb, jobs)
        ours = len(jobs) / (time.perf_counter() - t)
        t = time.perf_counter()
        outs = bare(jobs, args.workers)
        peer = len(jobs) / (time.perf_counter() - t)
        if name == "doctest":  # both sides really ran the checks
            assert all((r := parse_report(res.stdout, n)) and r.ok
                       for res, n in zip(results, nonces))
            assert all((r := parse_report(o, n)) and r.ok for o, n in zip(outs, nonces))
        print(f"{name:<10}{ours:>12.1f}{peer:>10.1f}{ours / peer:>8.2f}")
        what = "a trivial program (start-up cost)" if name == "pass" else "a doctest check"
        rows.append(Row(name=f"sandboxed runs of {what}, {args.n} programs, {args.workers} at once",
                        unit="programs/s", ours=ours, peer=peer,
                        peer_name="bare subprocess.run(python -I -S -c)", samples=1,
                        notes=sb.describe().splitlines()[0][:120]))
    sb.close()
    emit(args.json, "sandbox", rows, {"machine": machine_info(), "args": vars(args) | {
        "json": str(args.json) if args.json else None}})


if __name__ == "__main__":
    main()
