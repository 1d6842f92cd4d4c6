"""The GPU's dense bf16 peak, the denominator of MFU in the GPU benchmarks."""

from __future__ import annotations

import torch

#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0,
                    "L40S": 362.0, "GH200": 989.0}


def peak_tflops(override: float | None) -> float:
    """``override`` when given, else the peak of the current CUDA device (most specific name
    first); an unknown GPU asks for ``--peak-tflops``."""
    if override:
        return override
    name = torch.cuda.get_device_name()
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if all(part in name for part in key.split()):
            return PEAK_BF16_TFLOPS[key]
    raise SystemExit(f"unknown GPU {name!r}: pass --peak-tflops")
