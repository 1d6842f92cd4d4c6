"""Deterministic, seekable batch order: which examples feed a given optimizer step.

Training reads examples ``0 .. n-1`` of a fixed, pre-tokenised set in epochs; each epoch is a
permutation drawn from ``(seed, epoch)``. Sample ``i`` of the whole run (counting across epochs)
is example ``perm(seed, i // n)[i % n]``, so the examples of optimizer step ``s`` are a pure
function of ``(seed, s)``: resuming at step ``s`` needs no replay of an iterator, and the data
position stored in a checkpoint is just the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EpochSampler:
    """Maps (step, micro-batch, rank) to example indices.

    Per optimizer step the run consumes ``batch_size * grad_accum * world_size`` samples:
    micro-batch ``m`` of rank ``r`` takes the ``batch_size`` samples starting at
    ``((step * grad_accum + m) * world_size + r) * batch_size``.
    """

    num_examples: int
    batch_size: int
    grad_accum: int = 1
    world_size: int = 1
    seed: int = 0
    shuffle: bool = True
    _perms: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.num_examples < 1:
            raise ValueError("EpochSampler needs at least one example")

    def permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_examples)
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = rng.permutation(self.num_examples)
        return self._perms[epoch]

    def samples(self, start: int, count: int) -> np.ndarray:
        """Example indices of run samples ``start .. start + count - 1`` (int64 ``[count]``)."""
        out = np.empty(count, dtype=np.int64)
        for j in range(count):
            i = start + j
            out[j] = self.permutation(i // self.num_examples)[i % self.num_examples]
        return out

    def indices(self, step: int, micro: int, rank: int = 0) -> np.ndarray:
        """Example indices of micro-batch ``micro`` of rank ``rank`` at optimizer step ``step``
        (0-based): int64 ``[batch_size]``."""
        start = ((step * self.grad_accum + micro) * self.world_size + rank) * self.batch_size
        return self.samples(start, self.batch_size)

    def epochs(self, steps: int) -> float:
        """How many passes over the data ``steps`` optimizer steps make."""
        return steps * self.batch_size * self.grad_accum * self.world_size / self.num_examples
