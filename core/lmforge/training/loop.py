"""The supervised training loop (pre-training, SFT, DPO, reward models): a thin composition
of the pieces in :mod:`lmforge.training.step` (one optimisation step of one model) and
:mod:`lmforge.training.state` (what a checkpoint holds). RL stages compose the same pieces into
their own outer loop.

A stage supplies three things and gets back a trained model:

* a ``model`` (a ``torch.nn.Module``, e.g. a :class:`lmforge.interfaces.CausalLM`);
* a :class:`LossFn` — ``loss_fn(module, batch) -> LossOutput`` returning a **sum** over the
  batch's units (target tokens for language modelling, pairs for DPO) and the number of units;
* a :class:`BatchSource` — ``micro_batches(step, rank, world_size)`` returning the
  ``grad_accum`` micro-batches of optimizer step ``step`` as a pure function of the step (see
  :class:`lmforge.training.sampling.EpochSampler`), so the data position is the step itself.
  ``rank`` and ``world_size`` are data-parallel ones (:func:`data_parallel`): model-parallel
  peers read the same batch.

Each optimizer step is an :class:`lmforge.training.step.OptimStep` call: micro-batch
accumulation with gradients divided by the whole step's unit count (the update equals one big
batch's mean loss, whatever the split), gradient clipping, the learning rate of
:func:`lmforge.training.schedule.lr_at`, AdamW.

The model is built by the backend from a :class:`lmforge.modelio.ModelRecipe` (what to build);
the backend owns placement, wrapping or sharding, the optimizer, ``no_sync``, clipping and the
model/optimizer part of checkpoints. Every forward goes through the module the backend returned.

Checkpoints (every ``checkpoint_every`` steps, a :class:`lmforge.training.state.StateRegistry`)
hold the backend's model and optimizer state, ``trainer.json`` state (step — scheduler and data
position — the world size, the data description and the running log window) and one RNG file per
rank (torch / CUDA / Python / NumPy). When ``ctx.resumed``, the newest checkpoint that passes its
hash check is restored on every rank, metrics after that step are dropped, and training
continues; on CPU in fp32 the loss curve and final weights are bitwise identical to an
uninterrupted run. Resuming on a different world size is refused (it would change the data
order), naming both sizes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from lmforge.errors import StageInputError
from lmforge.training.config import TrainLoopConfig
from lmforge.training.state import (
    StateOf,
    StateRegistry,
    capture_rng,
    restore_rng,
    seed_everything,
)
from lmforge.training.step import (
    Batch,
    LossFn,
    LossOutput,
    OptimStep,
    accumulate_gradients,
    data_parallel,
    to_device,
)

if TYPE_CHECKING:
    from lmforge.interfaces import Backend
    from lmforge.modelio import ModelRecipe
    from lmforge.stages import StageContext

__all__ = ["Batch", "BatchSource", "LossFn", "LossOutput", "OptimStep", "StateRegistry",
           "TrainResult", "Trainer", "accumulate_gradients", "build_backend", "capture_rng",
           "data_parallel", "evaluate", "restore_rng", "seed_everything", "to_device"]


class BatchSource(Protocol):
    def micro_batches(self, step: int, rank: int, world_size: int) -> list[Batch]:
        """The micro-batches of optimizer step ``step`` (0-based) for ``rank``; CPU tensors."""
        ...


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.train`.

    ``final_loss`` is the mean loss of the last logging window; ``losses`` the per-step losses
    of the steps this process ran (after a resume: only those after the checkpoint).
    """

    steps: int
    final_loss: float
    tokens_seen: int
    seconds: float
    resumed_from: int | None
    losses: list[float] = field(default_factory=list)


def build_backend(ctx: StageContext, loop: TrainLoopConfig) -> Backend:
    """The execution backend selected by ``loop.backend`` (``factory(config)``)."""
    return ctx.build("backend", loop.backend)


@torch.no_grad()
def evaluate(module: torch.nn.Module, loss_fn: LossFn, batches: Iterable[Batch],
             backend: Backend) -> dict[str, float]:
    """Mean loss and metrics over ``batches`` (eval mode, no gradients): ``{"loss": ...,
    <metric>: ..., "count": units}``; means are over units across all batches and ranks."""
    was_training = module.training
    module.eval()
    loss_sum, count = 0.0, 0.0
    sums: dict[str, float] = {}
    try:
        for b in batches:
            with backend.autocast():
                out = loss_fn(module, to_device(b, backend.device))
            loss_sum += float(out.loss_sum)
            count += float(out.count)
            for k, v in out.metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    finally:
        module.train(was_training)
    loss_sum = backend.all_reduce_mean(loss_sum)
    total = backend.all_reduce_mean(count)
    result = {"loss": loss_sum / total if total else float("nan"), "count": total}
    for k, v in sums.items():
        result[k] = backend.all_reduce_mean(v) / total if total else float("nan")
    return result


class Trainer:
    """Runs the optimisation of one stage (see the module docstring).

    Args:
        ctx: the stage context (checkpoints, metrics, progress, seed, resumed).
        model: what to train, as a :class:`lmforge.modelio.ModelRecipe`; the backend builds it
            (``self.module`` is the module to call).
        loop: the loop settings (steps, batch, accumulation, optimizer, cadence).
        loss_fn: see :class:`LossFn`.
        batches: see :class:`BatchSource`.
        backend: from :func:`build_backend`; built here when not given.
        metric_prefix: prefix of logged training metrics (``train/loss`` ...).
        data_state: JSON-able description of the data (e.g. example count and seed) stored in
            checkpoints; a resume with a different one is refused (the data changed).
        on_step: called as ``on_step(step)`` after each optimizer step (tests, hooks).
    """

    def __init__(self, ctx: StageContext, model: ModelRecipe, loop: TrainLoopConfig,
                 loss_fn: LossFn, batches: BatchSource, *, backend: Backend | None = None,
                 metric_prefix: str = "train/", data_state: Mapping[str, Any] | None = None,
                 on_step: Callable[[int], None] | None = None) -> None:
        self.ctx = ctx
        self.loop = loop
        self.loss_fn = loss_fn
        self.batches = batches
        self.backend = backend if backend is not None else build_backend(ctx, loop)
        self.recipe = model
        self.module = self.backend.build_model(model)
        self.optimizer = self.backend.build_optimizer(self.module, loop.optim)
        self.stepper = OptimStep(self.backend, self.module, self.optimizer, loop.optim,
                                 loop.steps)
        self.prefix = metric_prefix
        self.data_state = dict(data_state or {})
        self.on_step = on_step
        self.tokens_seen = 0
        self._window: dict[str, float] = {}
        self._window_steps = 0
        self._last_logged = float("nan")
        self._metrics_records: int | None = None  # logged before the checkpoint resumed from
        ctx.checkpoints.keep = loop.keep_checkpoints
        # Checkpoint layout: the backend's model/optimizer state in the folder itself,
        # trainer.json, rng-rank<r>.json.
        self.state = StateRegistry(ctx, self.backend)
        self.state.add("trainer", StateOf(self.trainer_state, self.load_trainer_state))
        self.state.add_model("model", self.module, self.optimizer)

    @property
    def step(self) -> int:
        """Optimizer steps completed (the position in the schedule and in the data)."""
        return self.stepper.step

    @step.setter
    def step(self, value: int) -> None:
        self.stepper.step = int(value)

    # -- checkpoint state ------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        """What the main rank stores besides the backend's model/optimizer state."""
        return {
            "step": self.step,
            "scheduler": {"kind": "warmup-cosine", "step": self.step},
            "world_size": self.backend.world_size,
            "data": dict(self.data_state),
            "progress": {"tokens_seen": self.tokens_seen, "window": dict(self._window),
                         "window_steps": self._window_steps, "last_logged": self._last_logged,
                         "metrics_records": self.ctx.metrics_records()},
        }

    def load_trainer_state(self, state: Mapping[str, Any]) -> None:
        ctx, be = self.ctx, self.backend
        check_world_size(ctx, int(state.get("world_size", 1)), be.world_size)
        if dict(state["data"]) != self.data_state:
            raise StageInputError(
                f"stage {ctx.stage_id!r}: the checkpoint was made on different data "
                f"({dict(state['data'])}) than this run's ({self.data_state}); delete "
                f"{ctx.checkpoints.root} or rerun with --force {ctx.stage_id}")
        self.step = int(state["step"])
        prog = state["progress"]
        self.tokens_seen = int(prog["tokens_seen"])
        self._window = {k: float(v) for k, v in prog["window"].items()}
        self._window_steps = int(prog["window_steps"])
        self._last_logged = float(prog["last_logged"])
        self._metrics_records = prog.get("metrics_records")

    def save_checkpoint(self) -> None:
        """Collective: every rank writes its part into the staging folder, the main rank
        commits it (hashes, atomic rename)."""
        self.state.save(self.step)

    def maybe_resume(self) -> int | None:
        """Restore the newest valid checkpoint when the stage resumes; returns its step."""
        if not self.ctx.resumed:
            return None
        path = self.state.resume()
        if path is None:
            if self.backend.is_main:
                self.ctx.truncate_metrics(0)
            return None
        if self.backend.is_main:  # records logged after the checkpoint go (final heldout too)
            self.ctx.truncate_metrics(self.step, self._metrics_records)
        return self.step

    def model_state(self) -> dict[str, torch.Tensor] | None:
        """Collective: the trained model's full state dict on the main rank (None elsewhere)."""
        return self.backend.full_state_dict(self.module)

    # -- the loop --------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimizer step (``self.step`` -> ``self.step + 1``); returns its metrics (see
        :meth:`lmforge.training.step.OptimStep.__call__`)."""
        dp_rank, dp_size = data_parallel(self.backend)
        micro = self.batches.micro_batches(self.step, dp_rank, dp_size)
        out = self.stepper(self.loss_fn, micro)
        self.tokens_seen += int(out["tokens"])
        return out

    def train(self) -> TrainResult:
        """Train to ``loop.steps`` (resuming when the stage resumes); returns the outcome."""
        seed_everything(self.ctx.seed)
        resumed_from = self.maybe_resume()
        self.module.train()
        losses: list[float] = []
        start = time.perf_counter()
        win_start, win_tokens = time.perf_counter(), 0
        p = self.prefix
        with self.ctx.progress(self.loop.steps, "train", unit="step") as bar:
            if self.step:
                bar.set(self.step)
            while self.step < self.loop.steps:
                m = self.train_step()
                losses.append(m["loss"])
                win_tokens += int(m["tokens"])
                for k, v in m.items():
                    if k not in ("lr", "tokens"):
                        self._window[k] = self._window.get(k, 0.0) + v
                self._window_steps += 1
                elapsed = max(time.perf_counter() - win_start, 1e-9)
                tok_s = win_tokens / elapsed
                if self.step % self.loop.log_every == 0 or self.step == self.loop.steps:
                    n = self._window_steps
                    record = {f"{p}{k}": v / n for k, v in self._window.items()}
                    record.update({f"{p}lr": m["lr"], f"{p}tokens_per_s": tok_s,
                                   f"{p}tokens_seen": self.tokens_seen})
                    self._last_logged = record[f"{p}loss"]
                    self.ctx.log(self.step, record)  # the main rank writes, others skip
                    self._window, self._window_steps = {}, 0
                    win_start, win_tokens = time.perf_counter(), 0
                bar.advance(1, loss=round(m["loss"], 4), tok_s=int(tok_s))
                if self.step % self.loop.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.on_step is not None:
                    self.on_step(self.step)
        return TrainResult(steps=self.step, final_loss=self._last_logged,
                           tokens_seen=self.tokens_seen,
                           seconds=time.perf_counter() - start, resumed_from=resumed_from,
                           losses=losses)


def check_world_size(ctx: StageContext, saved: int, now: int) -> None:
    """Refuse to resume a checkpoint written by another number of ranks (the data order, and
    with it every later step, would change), naming both sizes and the fix."""
    if saved != now:
        latest = ctx.checkpoints.latest()
        raise StageInputError(
            f"stage {ctx.stage_id!r}: its checkpoint {getattr(latest, 'path', '')} was written "
            f"by {saved} rank(s) but this run has {now}; resuming would change the data order "
            f"(each step reads batch_size x grad_accum x world_size examples). Rerun with "
            f"{saved} rank(s), or start the stage over with --force {ctx.stage_id}")
