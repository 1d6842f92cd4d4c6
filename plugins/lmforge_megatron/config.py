"""Config of the ``megatron`` backend and its layout checks (light: pydantic and the core only).

A *layout* splits the world of ``W`` ranks into ``tensor_parallel`` x ``context_parallel`` x
data-parallel x ``pipeline_parallel`` ranks (Megatron's ``tp-cp-ep-dp-pp`` order); experts are
split ``expert_parallel`` ways (with ``expert_tensor_parallel``-way tensor parallelism inside an
expert) over the same ranks. What depends only on the config and the architecture is checked
when the spec is validated (:meth:`MegatronBackendConfig.check_architecture`, called by the
training stages' configs through :func:`lmforge.training.config.check_backend_fits`); what
depends on the world size is checked when the backend starts (:meth:`check_world`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lmforge import Config, ConfigValueError, LmforgeError

#: The environment variable that lets the backend run on CPU with gloo. For lmforge's own
#: tests only: they patch Megatron-Core's CUDA-only calls (tests/megatron/megatron_cpu.py);
#: without those patches Megatron-Core fails inside its first CUDA call.
CPU_ENV = "LMFORGE_MEGATRON_CPU"


class MegatronBackendConfig(Config):
    """Megatron-Core (NVIDIA GPUs): tensor, pipeline, expert and context parallelism for
    dense and MoE transformers, Megatron's schedules, optimizer and distributed checkpoints.

    Micro-batches are the training loop's: ``loop.batch_size`` sequences each,
    ``loop.grad_accum`` of them per optimizer step and data-parallel rank (``micro_batch_size``
    may split them further for the pipeline schedule).
    """

    distributed: ClassVar[bool] = True

    type: Literal["megatron"] = Field(default="megatron", description="Selects this backend.")
    tensor_parallel: int = Field(
        default=1, ge=1, le=1024, description="Tensor-parallel ranks: each attention and MLP "
        "matrix is split over them (attention heads, key/value heads and the MLP hidden size "
        "must be divisible by it). Keep it within one node (NVLink).")
    pipeline_parallel: int = Field(
        default=1, ge=1, le=1024, description="Pipeline stages: the blocks are split over them "
        "(n_layers must be divisible by pipeline_parallel x virtual_pipeline_stages); "
        "micro-batches flow through the stages with Megatron's 1F1B schedule.")
    virtual_pipeline_stages: int | None = Field(
        default=None, ge=2, le=1024, description="Model chunks per pipeline rank (Megatron's "
        "interleaved schedule: a smaller pipeline bubble for more communication); needs "
        "pipeline_parallel > 1 and loop.grad_accum divisible by pipeline_parallel. Default: "
        "one chunk per rank.")
    expert_parallel: int = Field(
        default=1, ge=1, le=1024, description="Expert-parallel ranks (MoE architectures): the "
        "experts of each layer are split over them (n_experts must be divisible by it); tokens "
        "are exchanged with all-to-all.")
    expert_tensor_parallel: int | None = Field(
        default=None, ge=1, le=1024, description="Tensor parallelism inside each expert. "
        "Default: tensor_parallel (Megatron's default).")
    context_parallel: int = Field(
        default=1, ge=1, le=1024, description="Context-parallel ranks: each sequence is split "
        "over them (loop.seq_len must be divisible by 2 x context_parallel). Needs Transformer "
        "Engine's attention.")
    sequence_parallel: bool = Field(
        default=False, description="Split the activations outside the tensor-parallel "
        "matrices (norms, dropout) over the tensor-parallel ranks along the sequence; needs "
        "tensor_parallel > 1. Required by Megatron when tensor and expert parallelism combine.")
    distributed_optimizer: bool = Field(
        default=False, description="Shard the fp32 master weights and Adam state over the "
        "data-parallel ranks (ZeRO-1: Megatron's DistributedOptimizer).")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="bf16: bf16 weights and activations with fp32 master "
        "weights, gradient reduction and optimizer state. auto: bf16 on GPUs, fp32 on CPU.")
    recompute: Literal["none", "selective", "full"] = Field(
        default="none", description="Activation recomputation: selective recomputes the "
        "attention core (softmax, dropout) in the backward pass, full every block's "
        "activations (least memory, about one more forward).")
    micro_batch_size: int | None = Field(
        default=None, ge=1, le=2**20, description="Sequences per micro-batch of Megatron's "
        "schedule: each of the loop's micro-batches (loop.batch_size sequences) is split into "
        "loop.batch_size / micro_batch_size of them, so a pipeline has more micro-batches in "
        "flight. Default: loop.batch_size. The loss and its gradients do not change.")
    transformer_engine: Literal["auto", "on", "off"] = Field(
        default="auto", description="Build the layers from NVIDIA Transformer Engine (fused "
        "kernels, grouped GEMM for experts, context parallelism) when it is installed (auto), "
        "always (on: an error without it) or never (off: Megatron-Core's own torch layers).")
    moe_token_dispatcher: Literal["alltoall", "allgather"] = Field(
        default="alltoall", description="How MoE tokens reach their experts' ranks.")
    overlap_grad_reduce: bool = Field(
        default=False, description="Overlap the data-parallel gradient reduction with the "
        "backward pass (bucketed).")
    make_vocab_size_divisible_by: int = Field(
        default=128, ge=1, le=2**16, description="The embedding and output layer are padded "
        "to a multiple of this times tensor_parallel rows (padded entries never receive "
        "probability: their logits are masked).")

    @model_validator(mode="after")
    def _consistent(self) -> MegatronBackendConfig:
        if self.sequence_parallel and self.tensor_parallel == 1:
            raise ConfigValueError("sequence_parallel needs tensor_parallel > 1 (it splits "
                                   "activations over the tensor-parallel ranks)",
                                   ("sequence_parallel",))
        if self.virtual_pipeline_stages is not None and self.pipeline_parallel == 1:
            raise ConfigValueError("virtual_pipeline_stages needs pipeline_parallel > 1",
                                   ("virtual_pipeline_stages",))
        if self.context_parallel > 1 and self.transformer_engine == "off":
            raise ConfigValueError("context_parallel > 1 needs Transformer Engine's attention; "
                                   "it cannot be used with transformer_engine: off",
                                   ("context_parallel",))
        return self

    # -- layouts -----------------------------------------------------------------------------
    @property
    def etp(self) -> int:
        """Tensor parallelism inside an expert."""
        return self.expert_tensor_parallel or self.tensor_parallel

    @property
    def chunks(self) -> int:
        """Model chunks per pipeline rank."""
        return self.virtual_pipeline_stages or 1

    @property
    def model_parallel(self) -> int:
        """Ranks that hold one copy of the (dense part of the) model."""
        return self.tensor_parallel * self.context_parallel * self.pipeline_parallel

    def describe_layout(self) -> str:
        parts = [f"TP={self.tensor_parallel}", f"PP={self.pipeline_parallel}"]
        if self.virtual_pipeline_stages:
            parts.append(f"VPP={self.virtual_pipeline_stages}")
        if self.context_parallel > 1:
            parts.append(f"CP={self.context_parallel}")
        if self.expert_parallel > 1:
            parts.append(f"EP={self.expert_parallel}")
        if self.expert_tensor_parallel is not None:
            parts.append(f"ETP={self.expert_tensor_parallel}")
        return " ".join(parts)

    def check_architecture(self, architecture: Any, loop: Any = None) -> None:
        """Refuse a layout the architecture cannot be split into (a
        :class:`lmforge.ConfigValueError` naming this config's key), or an architecture without
        a neutral transformer description. ``loop`` (the training loop's config) adds the
        checks of sequence length and batch size."""
        describe = getattr(architecture, "transformer", None)
        if not callable(describe):
            raise ConfigValueError(
                f"backend 'megatron' builds the model from the architecture's neutral "
                f"transformer description, and architecture "
                f"{getattr(architecture, 'type', type(architecture).__name__)!r} has none (its "
                f"config has no transformer() method); train it with backend local, ddp or "
                f"fsdp2", ("type",))
        shape = describe()
        if getattr(shape, "head", "lm") != "lm":
            raise ConfigValueError(
                f"backend 'megatron' builds language models only, and this architecture has a "
                f"{shape.head!r} head (a reward or value model); train it with backend local, "
                f"ddp or fsdp2", ("head",))
        for problem in layout_problems(self, shape, loop):
            raise ConfigValueError(problem[1], (problem[0],))

    def check_world(self, world_size: int) -> int:
        """The data-parallel size of this layout on ``world_size`` ranks; an
        :class:`lmforge.LmforgeError` naming both numbers when it does not divide."""
        mp = self.model_parallel
        if world_size % mp:
            raise LmforgeError(
                f"backend 'megatron': the world size {world_size} is not divisible by "
                f"tensor_parallel x context_parallel x pipeline_parallel = {mp} "
                f"({self.describe_layout()}); launch a multiple of {mp} ranks or change the "
                f"layout")
        dp = world_size // mp
        expert_ranks = self.expert_parallel * self.etp
        dense_ranks = self.tensor_parallel * self.context_parallel * dp
        if dense_ranks % expert_ranks:
            raise LmforgeError(
                f"backend 'megatron': expert_parallel x expert tensor parallel = "
                f"{expert_ranks} does not divide the {dense_ranks} ranks of a pipeline stage "
                f"(world size {world_size} / pipeline_parallel {self.pipeline_parallel}); "
                f"launch more ranks or lower expert_parallel")
        return dp


def layout_problems(cfg: MegatronBackendConfig, shape: Any, loop: Any = None
                    ) -> list[tuple[str, str]]:
    """``(config key, message)`` for each way ``shape`` (a
    :class:`lmforge.interfaces.TransformerShape`) cannot be split as ``cfg`` says."""
    out: list[tuple[str, str]] = []
    tp, etp = cfg.tensor_parallel, cfg.etp
    for what, n in (("attention heads (n_heads)", shape.n_heads),
                    ("key/value heads (n_kv_heads)", shape.n_kv_heads)):
        if n % tp:
            out.append(("tensor_parallel", f"the model's {n} {what} are not divisible by "
                        f"tensor_parallel {tp}: each tensor-parallel rank holds whole heads"))
    if not shape.is_moe and shape.ffn_hidden % tp:
        out.append(("tensor_parallel", f"the MLP hidden size {shape.ffn_hidden} is not "
                    f"divisible by tensor_parallel {tp}"))
    stages = cfg.pipeline_parallel * cfg.chunks
    if shape.n_layers % stages:
        what = (f"pipeline_parallel {cfg.pipeline_parallel} x virtual_pipeline_stages "
                f"{cfg.chunks} = {stages}" if cfg.chunks > 1 else
                f"pipeline_parallel {cfg.pipeline_parallel}")
        key = "virtual_pipeline_stages" if cfg.chunks > 1 else "pipeline_parallel"
        out.append((key, f"the model's {shape.n_layers} layers are not divisible by {what}: "
                    f"every pipeline stage holds the same number of layers"))
    if cfg.expert_parallel > 1 and not shape.is_moe:
        out.append(("expert_parallel", f"expert_parallel {cfg.expert_parallel} needs a "
                    f"mixture-of-experts architecture; this one is dense"))
    if shape.is_moe:
        if shape.n_experts % cfg.expert_parallel:
            out.append(("expert_parallel", f"the model's {shape.n_experts} experts are not "
                        f"divisible by expert_parallel {cfg.expert_parallel}"))
        if shape.ffn_hidden % etp:
            out.append(("expert_tensor_parallel", f"the expert hidden size {shape.ffn_hidden} "
                        f"is not divisible by the expert tensor parallelism {etp}"))
        if tp > 1 and cfg.expert_parallel > 1 and not cfg.sequence_parallel:
            out.append(("sequence_parallel", "Megatron-Core needs sequence_parallel: true when "
                        "tensor_parallel and expert_parallel are both above 1"))
    if loop is not None:
        seq = getattr(loop, "seq_len", None)
        cp = cfg.context_parallel
        if cp > 1 and isinstance(seq, int) and seq % (2 * cp):
            out.append(("context_parallel", f"loop.seq_len {seq} is not divisible by 2 x "
                        f"context_parallel = {2 * cp} (each rank takes two chunks of every "
                        f"sequence, for load balance under the causal mask)"))
        batch = getattr(loop, "batch_size", None)
        mbs = cfg.micro_batch_size
        if mbs is not None and isinstance(batch, int) and batch % mbs:
            out.append(("micro_batch_size", f"loop.batch_size {batch} is not divisible by "
                        f"micro_batch_size {mbs}"))
        accum = getattr(loop, "grad_accum", None)
        if cfg.chunks > 1 and isinstance(accum, int) and isinstance(batch, int):
            micro = accum * (batch // (mbs or batch))
            if micro % cfg.pipeline_parallel:
                out.append(("virtual_pipeline_stages", f"the interleaved schedule needs the "
                            f"number of micro-batches per step ({micro}: loop.grad_accum x "
                            f"loop.batch_size / micro_batch_size) to be divisible by "
                            f"pipeline_parallel {cfg.pipeline_parallel}"))
    return out
