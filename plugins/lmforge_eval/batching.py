"""Padding examples into tensors and scoring them with :mod:`lmforge.training.losses`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

IGNORE = -100


def example(ids: Sequence[int], scored: Sequence[bool]) -> tuple[list[int], list[int]]:
    """Inputs and pre-shifted labels of one sequence: position ``t`` predicts ``ids[t + 1]``,
    scored only where ``scored[t + 1]``. Returns two lists of length ``len(ids) - 1``."""
    inp = list(ids[:-1])
    lab = [tok if keep else IGNORE for tok, keep in zip(ids[1:], scored[1:], strict=True)]
    return inp, lab


def pad(examples: Sequence[tuple[list[int], list[int]]], pad_id: int, device: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``(inputs, labels)`` pairs to ``[B, T_max]`` LongTensors (labels with -100)."""
    t = max(len(inp) for inp, _ in examples)
    inp = torch.full((len(examples), t), pad_id, dtype=torch.long)
    lab = torch.full((len(examples), t), IGNORE, dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        inp[i, :len(x)] = torch.tensor(x, dtype=torch.long)
        lab[i, :len(y)] = torch.tensor(y, dtype=torch.long)
    return inp.to(device), lab.to(device)


def sequence_scores(model: Any, examples: Sequence[tuple[list[int], list[int]]], pad_id: int,
                    device: Any, batch_size: int) -> list[float]:
    """Sum of log-probs of the labelled tokens of each example (float per example)."""
    from lmforge.training.losses import sequence_logprobs

    out: list[float] = []
    for start in range(0, len(examples), batch_size):
        inp, lab = pad(examples[start:start + batch_size], pad_id, device)
        out += sequence_logprobs(model, inp, lab).float().cpu().tolist()
    return out


def loss_sum(model: Any, examples: Sequence[tuple[list[int], list[int]]], pad_id: int,
             device: Any, batch_size: int) -> tuple[float, int]:
    """Summed cross-entropy over the labelled tokens of all examples, and their count."""
    from lmforge.training.losses import causal_lm_loss

    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        inp, lab = pad(examples[start:start + batch_size], pad_id, device)
        s, n = causal_lm_loss(model, inp, lab)
        total += float(s)
        count += int(n)
    return total, count
