"""One optimisation step of one model: the piece every optimising stage is built from.

:class:`OptimStep` owns a model (the module a backend returned), its optimizer and the learning
rate schedule. Calling it with a loss function and the step's micro-batches runs one optimizer
step:

* every micro-batch forward (under ``backend.autocast()``) and backward on its *summed* loss
  (all but the last under ``backend.no_sync``), then the gradients are divided by the number of
  units of the whole step (all micro-batches, all ranks): the update equals one big batch's
  mean loss, whatever the split into micro-batches;
* gradient clipping (``optim.grad_clip``; 0: none), the learning rate of
  :func:`lmforge.training.schedule.lr_at` at this step, the optimizer's step, zeroed gradients.

A backend with its own ``train_step`` (Megatron: a pipeline schedule) runs the whole step
instead (see :class:`lmforge.interfaces.Backend`).

The supervised :class:`lmforge.training.loop.Trainer` makes one per stage; an RL stage makes
one per trained model (policy, value model) and calls each several times per rollout batch.
Its position in the schedule (:attr:`OptimStep.step`) is checkpointable state
(:meth:`OptimStep.state_dict`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from lmforge.training.schedule import lr_at

if TYPE_CHECKING:
    from lmforge.interfaces import Backend
    from lmforge.training.config import OptimConfig

Batch = Mapping[str, torch.Tensor]


@dataclass
class LossOutput:
    """What a loss function returns for one micro-batch.

    ``loss_sum``: float32 scalar tensor, the loss summed over the micro-batch's units;
    ``count``: number of units (scalar tensor or int), the normaliser;
    ``metrics``: extra values *summed over the same units* (e.g. ``rewards/chosen``); the loop
    reports them divided by the step's total count.
    """

    loss_sum: torch.Tensor
    count: torch.Tensor | int
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)


class LossFn(Protocol):
    def __call__(self, module: torch.nn.Module, batch: Batch) -> LossOutput: ...


def data_parallel(backend: Backend) -> tuple[int, int]:
    """``(rank, size)`` of this process among the backend's *data-parallel* replicas: the
    processes that read different batches. Model-parallel peers (Megatron's tensor-, context-
    and pipeline-parallel ranks) read the same batch and share one data-parallel rank. A
    backend says so with ``dp_rank`` / ``dp_size``; otherwise every rank is a replica
    (``(rank, world_size)``). Data order and evaluation shares are functions of these."""
    return (int(getattr(backend, "dp_rank", backend.rank)),
            int(getattr(backend, "dp_size", backend.world_size)))


def to_device(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _count_tokens(batch: Batch) -> int:
    ids = batch.get("input_ids")
    return int(ids.numel()) if ids is not None else 0


def accumulate_gradients(module: torch.nn.Module, loss_fn: LossFn, micro_batches: list[Batch],
                         backend: Backend) -> tuple[float, float, dict[str, float], int]:
    """Forward/backward every micro-batch, then scale gradients to the mean over all units.

    Gradients of ``sum(loss_sum) / total_count`` end up in ``.grad`` (``total_count`` summed
    over micro-batches and averaged over ranks, matching DDP's gradient mean). Returns
    ``(loss_sum, count, metric_sums, input_tokens)`` for this rank, as Python numbers.
    """
    device = backend.device
    loss_total = torch.zeros((), dtype=torch.float64)
    count_total = 0.0
    metric_sums: dict[str, float] = {}
    tokens = 0
    for i, mb in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else backend.no_sync(module):
            with backend.autocast():
                out = loss_fn(module, to_device(mb, device))
            out.loss_sum.backward()
        loss_total += out.loss_sum.detach().double().cpu()
        count_total += float(out.count)
        for k, v in out.metrics.items():
            metric_sums[k] = metric_sums.get(k, 0.0) + float(v)
        tokens += _count_tokens(mb)
    norm = backend.all_reduce_mean(count_total)
    if norm > 0:
        for p in module.parameters():
            if p.grad is not None:
                p.grad.div_(norm)
    return float(loss_total), count_total, metric_sums, tokens


class OptimStep:
    """One model + optimizer: optimizer steps along a warmup-cosine schedule of
    ``total_steps`` (see the module docstring).

    Args:
        backend: the backend that built ``module`` and ``optimizer``.
        module: the module to call (as the backend returned it).
        optimizer: its optimizer (``backend.build_optimizer``).
        optim: learning rate, schedule, clipping (:class:`lmforge.training.config.OptimConfig`).
        total_steps: length of the schedule (the cosine ends there).
    """

    def __init__(self, backend: Backend, module: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int) -> None:
        self.backend, self.module, self.optimizer = backend, module, optimizer
        self.optim, self.total_steps = optim, int(total_steps)
        self.step = 0  # optimizer steps completed

    def lr(self) -> float:
        """The learning rate of the next step."""
        return lr_at(self.step, self.optim, self.total_steps)

    def __call__(self, loss_fn: LossFn, micro_batches: list[Batch]) -> dict[str, float]:
        """Collective: one optimizer step over this rank's ``micro_batches``.

        Returns the step's metrics, reduced over ranks: ``loss`` (mean over all units),
        ``lr``, ``grad_norm`` (before clipping), ``tokens`` (input tokens of the step, all
        data-parallel ranks) and each of the loss function's metrics (mean over units).
        """
        be = self.backend
        lr = self.lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        step_fn = getattr(be, "train_step", None)
        if callable(step_fn):
            loss_sum, count, metric_sums, tokens, grad_norm = step_fn(
                self.module, self.optimizer, loss_fn, micro_batches, self.optim.grad_clip)
        else:
            loss_sum, count, metric_sums, tokens = accumulate_gradients(
                self.module, loss_fn, micro_batches, be)
            grad_norm = be.clip_grad_norm_(self.module, self.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        total = be.all_reduce_mean(count)
        loss = be.all_reduce_mean(loss_sum) / total if total else float("nan")
        step_tokens = int(round(be.all_reduce_mean(float(tokens)) * data_parallel(be)[1]))
        out = {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": step_tokens}
        for k, v in metric_sums.items():
            out[k] = be.all_reduce_mean(v) / total if total else float("nan")
        return out

    def state_dict(self) -> dict[str, Any]:
        """The schedule position (the model and optimizer are saved by the backend)."""
        return {"step": self.step, "total_steps": self.total_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
