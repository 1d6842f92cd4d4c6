"""The training loop every optimising stage (pre-training, SFT, DPO ...) shares.

A stage supplies three things and gets back a trained model:

* a ``model`` (a ``torch.nn.Module``, e.g. a :class:`lmforge.interfaces.CausalLM`);
* a :class:`LossFn` — ``loss_fn(module, batch) -> LossOutput`` returning a **sum** over the
  batch's units (target tokens for language modelling, pairs for DPO) and the number of units;
* a :class:`BatchSource` — ``micro_batches(step, rank, world_size)`` returning the
  ``grad_accum`` micro-batches of optimizer step ``step`` as a pure function of the step (see
  :class:`lmforge.training.sampling.EpochSampler`), so the data position is the step itself.
  ``rank`` and ``world_size`` are data-parallel ones (:func:`data_parallel`): model-parallel
  peers read the same batch.

Per optimizer step the loop runs every micro-batch forward (under ``backend.autocast()``) and
backward on its *summed* loss, then divides the gradients by the number of units of the whole
step (all micro-batches, all ranks): the update equals one big batch's mean loss, whatever the
split into micro-batches. Then: gradient clipping, the learning rate of
:func:`lmforge.training.schedule.lr_at`, AdamW.

The model is built by the backend from a :class:`lmforge.modelio.ModelRecipe` (what to build);
the backend owns placement, wrapping or sharding, the optimizer, ``no_sync``, clipping and the
model/optimizer part of checkpoints. Every forward goes through the module the backend returned.

Checkpoints (every ``checkpoint_every`` steps, through ``ctx.checkpoints``) hold the backend's
model and optimizer state, ``trainer.json`` state (step — scheduler and data position — the
world size, the data description and the running log window) and one RNG file per rank
(torch / CUDA / Python / NumPy). When ``ctx.resumed``, the newest checkpoint that passes its
hash check is restored on every rank, metrics after that step are dropped, and training
continues; on CPU in fp32 the loss curve and final weights are bitwise identical to an
uninterrupted run. Resuming on a different world size is refused (it would change the data
order), naming both sizes.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from lmforge import dist
from lmforge.checkpoint import read_state, write_state
from lmforge.errors import StageInputError
from lmforge.training.config import TrainLoopConfig
from lmforge.training.schedule import lr_at

if TYPE_CHECKING:
    from lmforge.interfaces import Backend
    from lmforge.modelio import ModelRecipe
    from lmforge.stages import StageContext

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


# -- RNG state ----------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """Every RNG the loop (and dropout, sampling) may draw from, as checkpointable state."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"name": np_state[0], "keys": [int(x) for x in np_state[1]],
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


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
        self.prefix = metric_prefix
        self.data_state = dict(data_state or {})
        self.on_step = on_step
        self.step = 0  # optimizer steps completed
        self.tokens_seen = 0
        self._window: dict[str, float] = {}
        self._window_steps = 0
        self._last_logged = float("nan")
        self._metrics_records: int | None = None  # logged before the checkpoint resumed from
        ctx.checkpoints.keep = loop.keep_checkpoints

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
        saved_world = int(state.get("world_size", 1))
        if saved_world != be.world_size:
            raise StageInputError(
                f"stage {ctx.stage_id!r}: its checkpoint {ctx.checkpoints.latest().path} was "  # type: ignore[union-attr]
                f"written by {saved_world} rank(s) but this run has {be.world_size}; resuming "
                f"would change the data order (each step reads batch_size x grad_accum x "
                f"world_size examples). Rerun with {saved_world} rank(s), or start the stage "
                f"over with --force {ctx.stage_id}")
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
        be, store = self.backend, self.ctx.checkpoints
        if be.is_main:
            store.begin(self.step)
        dist.barrier()
        folder = store.staging(self.step)
        be.save_checkpoint(folder, self.module, self.optimizer)
        write_state(folder, f"rng-rank{be.rank}", capture_rng())
        if be.is_main:
            write_state(folder, "trainer", self.trainer_state())
        dist.barrier()
        if be.is_main:
            store.commit(self.step)
        dist.barrier()

    def maybe_resume(self) -> int | None:
        """Restore the newest valid checkpoint when the stage resumes; returns its step."""
        if not self.ctx.resumed:
            return None
        store = self.ctx.checkpoints
        path = dist.main_decides(lambda: getattr(store.latest_valid(), "path", None))
        if path is None:
            if self.backend.is_main:
                self.ctx.truncate_metrics(0)
            return None
        self.load_trainer_state(read_state(path, "trainer"))
        self.backend.load_checkpoint(path, self.module, self.optimizer)
        rng = path / f"rng-rank{self.backend.rank}.json"
        if rng.is_file():
            restore_rng(read_state(path, f"rng-rank{self.backend.rank}"))
        if self.backend.is_main:  # records logged after the checkpoint go (final heldout too)
            self.ctx.truncate_metrics(self.step, self._metrics_records)
        return self.step

    def model_state(self) -> dict[str, torch.Tensor] | None:
        """Collective: the trained model's full state dict on the main rank (None elsewhere)."""
        return self.backend.full_state_dict(self.module)

    # -- the loop --------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimizer step (``self.step`` -> ``self.step + 1``); returns its metrics.

        A backend with its own ``train_step`` (Megatron: a pipeline schedule) runs the whole
        step — forward/backward of every micro-batch, gradient reduction, clipping, the
        optimizer — see :class:`lmforge.interfaces.Backend`; otherwise the loop does, through
        the backend's ``no_sync`` and ``clip_grad_norm_``."""
        be = self.backend
        lr = lr_at(self.step, self.loop.optim, self.loop.steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        dp_rank, dp_size = data_parallel(be)
        micro = self.batches.micro_batches(self.step, dp_rank, dp_size)
        step_fn = getattr(be, "train_step", None)
        if callable(step_fn):
            loss_sum, count, metric_sums, tokens, grad_norm = step_fn(
                self.module, self.optimizer, self.loss_fn, micro, self.loop.optim.grad_clip)
        else:
            loss_sum, count, metric_sums, tokens = accumulate_gradients(
                self.module, self.loss_fn, micro, be)
            grad_norm = be.clip_grad_norm_(self.module, self.loop.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        total = be.all_reduce_mean(count)
        loss = be.all_reduce_mean(loss_sum) / total if total else float("nan")
        step_tokens = int(round(be.all_reduce_mean(float(tokens)) * dp_size))
        self.tokens_seen += step_tokens
        out = {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": step_tokens}
        for k, v in metric_sums.items():
            out[k] = be.all_reduce_mean(v) / total if total else float("nan")
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
