"""The ``megatron`` backend: Megatron-Core builds, steps and saves the model.

Building (:meth:`MegatronBackend.build_model`, collective): the process groups of the layout
(``parallel_state.initialize_model_parallel``: tensor, pipeline with optional virtual stages,
context, expert), then one ``GPTModel`` per model chunk from a ``TransformerConfig`` derived
from the architecture's neutral :class:`lmforge.interfaces.TransformerShape` (RMSNorm, SwiGLU,
rotary, grouped-query attention, no biases; MoE layers with top-k softmax routing and the
load-balancing loss), with the layer spec of Transformer Engine when it is installed or
Megatron-Core's own torch layers, pre/post-processing set per pipeline stage. Every rank then
copies its shard of the *canonical* weights — the ``init`` artifact, or the seeded fresh build
on CPU that every backend starts from — through :mod:`lmforge_megatron.convert`, and the chunks
are wrapped in Megatron's ``DistributedDataParallel`` (bf16: ``Float16Module`` first).

Stepping (:meth:`MegatronBackend.train_step`): the step's micro-batches go through
``get_forward_backward_func()`` (no pipelining, 1F1B or interleaved), with
``calculate_per_token_loss`` so that the gradient is the sum of the stage's loss over all
micro-batches and data-parallel ranks divided by their total count — what the other backends
compute — then ``finalize_model_grads`` (data-parallel reduction, embedding and sequence-
parallel all-reduces, the division) and Megatron's optimizer (clipping, AdamW, the distributed
optimizer when configured). The stage's loss function is called on the last pipeline stage
with the returned module, whose forward runs the current chunk; earlier stages get a
placeholder output and pass their hidden states on.

Saving: resumable checkpoints are Megatron ``dist_checkpointing`` (model and optimizer, sharded,
every rank writing its part) in ``dist/`` of the stage's checkpoint folder; the output artifact
is gathered to the main rank in canonical names (:meth:`full_state_dict`).

Requires CUDA GPUs; ``LMFORGE_MEGATRON_CPU=1`` lets lmforge's own tests run it on CPU with
gloo after patching Megatron-Core's CUDA-only calls (tests/megatron/megatron_cpu.py).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import torch

from lmforge import ConfigValueError, LmforgeError, dist
from lmforge.interfaces import CausalLMOutput
from lmforge_megatron.config import CPU_ENV, MegatronBackendConfig
from lmforge_megatron.convert import (
    Layout,
    assemble,
    canonical_shapes,
    is_replicated,
    local_pieces,
    local_tensor,
    padded_vocab_size,
    segments,
)

with warnings.catch_warnings():  # "Transformer Engine and Apex are not installed" x 5
    warnings.simplefilter("ignore")
    from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.distributed.finalize_model_grads import finalize_model_grads
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.module import Float16Module

IGNORE_INDEX = -100
DIST_DIR = "dist"


def have_transformer_engine() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # noqa: BLE001 - absent or broken: not usable either way
        return False
    return True


def gpt_of(chunk: torch.nn.Module) -> Any:
    """The ``GPTModel`` inside a chunk wrapped by DDP and ``Float16Module``."""
    while not isinstance(chunk, GPTModel):
        chunk = chunk.module
    return chunk


class MegatronLM(torch.nn.Module):
    """The module the backend returns: the model-call contract
    (:class:`lmforge.interfaces.CausalLM`) over this rank's Megatron model chunks.

    * Inside :meth:`MegatronBackend.train_step` a call runs the chunk the schedule is at: on
      the last pipeline stage it returns the real outputs, elsewhere a placeholder (zeros of
      the right shapes) while the hidden states go to the next stage.
    * Called directly (evaluation, reference log-probs, generation) every rank of the
      model-parallel group must call it with the same inputs; with pipeline stages the forward
      runs stage after stage (no gradients) and the last stage's outputs are broadcast.

    ``logits`` come back whole (gathered over the tensor-parallel ranks); ``loss_sum`` and
    ``token_logprobs`` use Megatron's vocabulary-parallel cross-entropy, the padded vocabulary
    entries masked. Router losses are applied inside Megatron's MoE layers (not returned in
    ``aux_losses``; :meth:`MegatronBackend.train_step` reports them). ``positions`` other than
    ``0..T-1`` and padding ``attention_mask`` are not supported.
    """

    def __init__(self, backend: MegatronBackend, chunks: list[torch.nn.Module], vocab_size: int,
                 max_seq_len: int) -> None:
        super().__init__()
        self.chunks = torch.nn.ModuleList(chunks)
        self.vocab_size = vocab_size
        self.max_seq_len = max_seq_len
        self._backend = [backend]  # not a submodule
        self._stage: torch.nn.Module | None = None
        self._stage_output: torch.Tensor | None = None

    @property
    def blocks(self) -> list[Any]:
        return [layer for c in self.chunks for layer in gpt_of(c).decoder.layers]

    def init_buffers(self) -> None:
        return None

    # -- the model-call contract --------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, *, labels: torch.Tensor | None = None,
                positions: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_logprobs: bool = False,
                logits_to_keep: int | None = None) -> CausalLMOutput:
        b, t = input_ids.shape
        if t > self.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's max_seq_len "
                             f"{self.max_seq_len}")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise LmforgeError("backend 'megatron' does not support padding masks "
                               "(attention_mask with zeros); left-padded batches (generation) "
                               "need backend local, ddp or fsdp2")
        if positions is not None:
            expect = torch.arange(t, device=positions.device).expand(b, t)
            if not torch.equal(positions, expect):
                raise LmforgeError("backend 'megatron' only supports positions 0..T-1")
        call = (input_ids, labels, return_logprobs, logits_to_keep)
        if self._stage is not None:
            return self._run_chunk(self._stage, *call)
        if len(self.chunks) == 1 and self._backend[0].pp == 1:
            return self._run_chunk(self.chunks[0], *call)
        if torch.is_grad_enabled() and self.training:
            raise LmforgeError("with pipeline stages, training steps go through the backend's "
                               "train_step; a direct call is for evaluation (no gradients)")
        return self._pipeline_forward(*call)

    def _run_chunk(self, chunk: torch.nn.Module, input_ids: torch.Tensor,
                   labels: torch.Tensor | None, return_logprobs: bool,
                   logits_to_keep: int | None) -> CausalLMOutput:
        out = chunk(input_ids, None, None)
        if gpt_of(chunk).post_process:
            return self._outputs(out, labels, return_logprobs, logits_to_keep)
        self._stage_output = out
        return self._placeholder(input_ids, labels, return_logprobs, logits_to_keep)

    def take_stage_output(self) -> torch.Tensor | None:
        out, self._stage_output = self._stage_output, None
        return out

    def _placeholder(self, input_ids: torch.Tensor, labels: torch.Tensor | None,
                     return_logprobs: bool, logits_to_keep: int | None) -> CausalLMOutput:
        """What a stage without the output layer returns: zeros of the right shapes."""
        b, t = input_ids.shape
        dev = input_ids.device
        if labels is None:
            keep = logits_to_keep or t
            return CausalLMOutput(logits=torch.zeros(b, keep, self.vocab_size, device=dev))
        if return_logprobs:
            return CausalLMOutput(token_logprobs=torch.zeros(b, t, device=dev))
        return CausalLMOutput(loss_sum=torch.zeros((), device=dev),
                              num_tokens=(labels != IGNORE_INDEX).sum())

    def _outputs(self, logits: torch.Tensor, labels: torch.Tensor | None,
                 return_logprobs: bool, logits_to_keep: int | None) -> CausalLMOutput:
        """From this rank's vocabulary-parallel logits ``[B, T, V_padded / tp]``."""
        be = self._backend[0]
        logits = logits.float()
        per_rank = logits.shape[-1]
        start = be.tp_rank * per_rank
        if start + per_rank > self.vocab_size:  # padded vocabulary entries never win
            cols = torch.arange(start, start + per_rank, device=logits.device)
            logits = logits.masked_fill(cols >= self.vocab_size, float("-inf"))
        if labels is None:
            if logits_to_keep:
                logits = logits[:, -logits_to_keep:]
            full = tensor_parallel.gather_from_tensor_model_parallel_region(logits.contiguous())
            return CausalLMOutput(logits=full[..., :self.vocab_size])
        valid = labels != IGNORE_INDEX
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        ce = tensor_parallel.vocab_parallel_cross_entropy(logits, safe)
        ce = torch.where(valid, ce, torch.zeros_like(ce))
        if return_logprobs:
            return CausalLMOutput(token_logprobs=-ce)
        return CausalLMOutput(loss_sum=ce.sum(), num_tokens=valid.sum())

    @torch.no_grad()
    def _pipeline_forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None,
                          return_logprobs: bool, logits_to_keep: int | None) -> CausalLMOutput:
        """A forward pass through every pipeline stage and chunk in turn (no schedule, no
        gradients); the last stage's outputs are broadcast over the pipeline group."""
        be = self._backend[0]
        group = parallel_state.get_pipeline_model_parallel_group()
        ranks = torch.distributed.get_process_group_ranks(group)
        pp, me = be.pp, be.pp_rank
        hidden: torch.Tensor | None = None
        result: CausalLMOutput | None = None
        b, t = input_ids.shape
        sp = be.config.sequence_parallel
        shape = (t // (be.config.tensor_parallel if sp else 1), b, be.shape.dim)
        dtype = be.params_dtype
        steps = [(vp, s) for vp in range(len(self.chunks)) for s in range(pp)]
        for i, (vp, stage) in enumerate(steps):
            if stage == me:
                chunk = self.chunks[vp]
                gpt_of(chunk).set_input_tensor(hidden)
                out = self._run_chunk(chunk, input_ids, labels, return_logprobs, logits_to_keep)
                if i == len(steps) - 1:
                    result = out
                else:
                    hidden = self.take_stage_output()
            if i == len(steps) - 1:
                break
            nxt = (stage + 1) % pp
            if stage == me and nxt != me:
                torch.distributed.send(hidden.contiguous(), ranks[nxt], group=group)
            elif nxt == me and stage != me:
                hidden = torch.empty(shape, dtype=dtype, device=be.device)
                torch.distributed.recv(hidden, ranks[stage], group=group)
        for c in self.chunks:
            gpt_of(c).set_input_tensor(None)
        box = [None]
        if me == pp - 1:
            box = [_to_cpu(result)]
        torch.distributed.broadcast_object_list(box, src=ranks[pp - 1], group=group,
                                                device=be.comm_device)
        return _to_device(box[0], be.device)


def _torch_optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    """The torch optimizers inside a Megatron (chained) optimizer."""
    parts = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    return [p.optimizer for p in parts if isinstance(getattr(p, "optimizer", None),
                                                     torch.optim.Optimizer)]


def _adam_step(optimizer: Any) -> float | None:
    """Adam's step count (the same for every parameter), or None before the first step."""
    for opt in _torch_optimizers(optimizer):
        for state in opt.state.values():
            if "step" in state:
                return float(state["step"])
    return None


def _init_adam_state(optimizer: Any) -> None:
    """Give every parameter an (empty) Adam state before a checkpoint is loaded into it.

    Without Apex or Transformer Engine, Megatron's distributed optimizer wraps torch's AdamW,
    whose state holds ``step`` per parameter; a fresh one has none, which the distributed
    optimizer's ``state_dict()`` cannot describe. Zeros are overwritten by the load."""
    for opt in _torch_optimizers(optimizer):
        for group in opt.param_groups:
            for p in group["params"]:
                state = opt.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)


def _set_adam_step(optimizer: Any, step: float) -> None:
    """Restore Adam's step count (Megatron 0.16's distributed optimizer does not reload it
    into torch's per-parameter state)."""
    for opt in _torch_optimizers(optimizer):
        for state in opt.state.values():
            if "step" in state:
                state["step"] = torch.tensor(step, dtype=state["step"].dtype,
                                             device=state["step"].device)


def _to_cpu(out: CausalLMOutput | None) -> dict[str, Any]:
    assert out is not None
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v)
            for k, v in vars(out).items() if k != "aux_losses"}


def _to_device(fields: dict[str, Any], device: torch.device) -> CausalLMOutput:
    return CausalLMOutput(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                             for k, v in fields.items()})


class MegatronBackend:
    """:class:`lmforge.interfaces.Backend` on Megatron-Core (see the module docstring).

    Besides the protocol it has ``dp_rank`` / ``dp_size`` (the data-parallel coordinates the
    trainer and stages shard data by: tensor-, context- and pipeline-parallel peers read the
    same batch) and ``train_step`` (the whole optimizer step through Megatron's schedule).
    Constructing it is light (no collective, no CUDA call); :meth:`build_model` joins the
    process groups — and refuses to start without CUDA, saying so.
    """

    name = "megatron"

    def __init__(self, config: MegatronBackendConfig) -> None:
        self.config = config
        cpu = os.environ.get(CPU_ENV) == "1"
        #: Why this machine cannot run the backend (raised when a model is built), or None.
        self.unavailable: str | None = None
        if not cpu and not torch.cuda.is_available():
            self.unavailable = (
                "backend 'megatron' needs NVIDIA GPUs: Megatron-Core runs its kernels, "
                "collectives and random-number generators on CUDA, and torch sees no CUDA "
                "device here (torch.cuda.is_available() is False). Train on this machine "
                "with backend local, ddp or fsdp2")
        self.rank, self.world_size = dist.rank(), dist.world_size()
        if cpu or self.unavailable:
            self.device = torch.device("cpu")
        else:
            self.device = torch.device("cuda", dist.local_rank() % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        if config.precision == "auto":
            self.precision = "bf16" if self.device.type == "cuda" else "fp32"
        else:
            self.precision = config.precision
        if self.precision == "bf16" and self.device.type == "cuda" and \
                not torch.cuda.is_bf16_supported():
            raise LmforgeError("backend 'megatron': precision bf16 was requested but this GPU "
                               "does not support bfloat16; use precision: fp32")
        if config.transformer_engine == "on" and not have_transformer_engine():
            raise LmforgeError("backend 'megatron': transformer_engine: on, but "
                               "transformer_engine cannot be imported; install NVIDIA "
                               "Transformer Engine or use transformer_engine: auto")
        self.use_te = config.transformer_engine != "off" and have_transformer_engine() \
            and self.device.type == "cuda"
        if not self.unavailable and not self.use_te:
            if config.context_parallel > 1:
                raise LmforgeError("backend 'megatron': context_parallel > 1 needs Transformer "
                                   "Engine's attention, which is not available here")
            if config.sequence_parallel:
                raise LmforgeError("backend 'megatron': sequence_parallel needs Transformer "
                                   "Engine's norms (Megatron-Core's torch norms refuse it), "
                                   "which are not available here")
        # Megatron's rank order tp-cp-(ep)-dp-pp: the dense groups are tp fastest, then cp,
        # dp, pp. Computed here (no collective) so stages can shard data before building.
        tp, cp = config.tensor_parallel, config.context_parallel
        self.dp_size = config.check_world(self.world_size)
        self.dp_rank = (self.rank // (tp * cp)) % self.dp_size
        self.tp_rank = self.rank % tp
        self.pp = config.pipeline_parallel
        self.pp_rank = self.rank // (tp * cp * self.dp_size)
        self.comm_device = self.device
        self.params_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.shape: Any = None
        self._ready = False
        self._gather_group: Any = None
        self._module: MegatronLM | None = None
        self._architecture: Any = None
        self._vocab = 0
        self._padded_vocab = 0
        self._tconfig: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- process groups ------------------------------------------------------------------------
    def _setup(self, seed: int) -> None:
        """Join the default group (a world of one without a launcher) and build Megatron's
        process groups for the layout. Collective; once per backend."""
        if self.unavailable:
            raise LmforgeError(self.unavailable)
        if self._ready:
            return
        dist.init()
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                "nccl" if self.device.type == "cuda" else "gloo",
                store=torch.distributed.HashStore(), rank=0, world_size=1)
        c = self.config
        if parallel_state.model_parallel_is_initialized():
            parallel_state.destroy_model_parallel()
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=c.tensor_parallel,
            pipeline_model_parallel_size=c.pipeline_parallel,
            virtual_pipeline_model_parallel_size=c.virtual_pipeline_stages,
            context_parallel_size=c.context_parallel,
            expert_model_parallel_size=c.expert_parallel,
            expert_tensor_parallel_size=c.expert_tensor_parallel)
        got = (parallel_state.get_data_parallel_rank(),
               parallel_state.get_data_parallel_world_size(),
               parallel_state.get_tensor_model_parallel_rank(),
               parallel_state.get_pipeline_model_parallel_rank())
        want = (self.dp_rank, self.dp_size, self.tp_rank, self.pp_rank)
        if got != want:
            raise LmforgeError(f"backend 'megatron': Megatron-Core placed rank {self.rank} at "
                               f"(dp, dp size, tp, pp) = {got}, expected {want}")
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
        # Gathering the output model: a gloo group (CPU tensors, any size).
        self._gather_group = (torch.distributed.new_group(backend="gloo")
                              if self.world_size > 1 else None)
        self._ready = True

    # -- building ------------------------------------------------------------------------------
    def _shape_of(self, architecture: Any) -> Any:
        try:
            self.config.check_architecture(architecture)
        except ConfigValueError as exc:
            key = ".".join(str(p) for p in exc.path)
            raise LmforgeError(f"backend 'megatron' ({key}): {exc.message}") from None
        return architecture.transformer()

    def _transformer_config(self, shape: Any) -> TransformerConfig:
        c = self.config
        bf16 = self.precision == "bf16"
        kw: dict[str, Any] = {}
        if shape.is_moe:
            lb = shape.router_aux_loss_coef / shape.n_layers
            z = shape.router_z_loss_coef / shape.n_layers
            kw.update(
                num_moe_experts=shape.n_experts, moe_router_topk=shape.top_k,
                moe_ffn_hidden_size=shape.ffn_hidden,
                moe_router_load_balancing_type="aux_loss" if lb > 0 else "none",
                moe_aux_loss_coeff=lb, moe_z_loss_coeff=z if z > 0 else None,
                moe_router_pre_softmax=False, moe_router_score_function="softmax",
                moe_grouped_gemm=self.use_te, moe_router_dtype="fp32")
        if c.virtual_pipeline_stages:
            # As Megatron-LM sets it for the interleaved schedule: unbatched p2p, which with two
            # stages keeps forward and backward messages between the same two ranks apart.
            kw.update(overlap_p2p_comm=True, batch_p2p_comm=False)
        if c.recompute == "selective":
            kw.update(recompute_granularity="selective")
        elif c.recompute == "full":
            kw.update(recompute_granularity="full", recompute_method="uniform",
                      recompute_num_layers=1)
        return TransformerConfig(
            num_layers=shape.n_layers, hidden_size=shape.dim,
            num_attention_heads=shape.n_heads, num_query_groups=shape.n_kv_heads,
            kv_channels=shape.head_dim, ffn_hidden_size=shape.ffn_hidden,
            normalization="RMSNorm", layernorm_epsilon=shape.norm_eps,
            add_bias_linear=False, add_qkv_bias=False, gated_linear_unit=True,
            activation_func=torch.nn.functional.silu, bias_activation_fusion=False,
            hidden_dropout=0.0, attention_dropout=0.0, init_method_std=shape.init_std,
            # Initialisation also marks tensor-parallel weights (the grad norm needs it); the
            # weights are then overwritten with the canonical ones.
            perform_initialization=True, use_cpu_initialization=self.device.type == "cpu",
            tensor_model_parallel_size=c.tensor_parallel,
            pipeline_model_parallel_size=c.pipeline_parallel,
            virtual_pipeline_model_parallel_size=c.virtual_pipeline_stages,
            context_parallel_size=c.context_parallel,
            expert_model_parallel_size=c.expert_parallel,
            expert_tensor_parallel_size=c.etp, sequence_parallel=c.sequence_parallel,
            bf16=bf16, params_dtype=self.params_dtype, pipeline_dtype=self.params_dtype,
            calculate_per_token_loss=True,
            variable_seq_lengths=c.pipeline_parallel > 1 and c.moe_token_dispatcher == "alltoall",
            apply_rope_fusion=False, masked_softmax_fusion=self.use_te,
            bias_dropout_fusion=False, gradient_accumulation_fusion=False,
            cross_entropy_loss_fusion=False, deallocate_pipeline_outputs=True,
            attention_softmax_in_fp32=True, moe_token_dispatcher_type=c.moe_token_dispatcher,
            **kw)

    def _layer_spec(self, shape: Any) -> Any:
        n = shape.n_experts if shape.is_moe else None
        if self.use_te:
            from megatron.core.models.gpt.gpt_layer_specs import (
                get_gpt_layer_with_transformer_engine_spec,
            )

            return get_gpt_layer_with_transformer_engine_spec(num_experts=n,
                                                              moe_grouped_gemm=n is not None)
        return get_gpt_layer_local_spec(num_experts=n, moe_grouped_gemm=False,
                                        normalization="RMSNorm")

    def layout(self) -> Layout:
        """This rank's coordinates for :mod:`lmforge_megatron.convert`."""
        return Layout(
            shape=self.shape, vocab_size=self._vocab, padded_vocab=self._padded_vocab,
            tp_rank=parallel_state.get_tensor_model_parallel_rank(),
            tp=parallel_state.get_tensor_model_parallel_world_size(),
            ep_rank=parallel_state.get_expert_model_parallel_rank(),
            ep=parallel_state.get_expert_model_parallel_world_size(),
            etp_rank=parallel_state.get_expert_tensor_parallel_rank(),
            etp=parallel_state.get_expert_tensor_parallel_world_size())

    @staticmethod
    def _layer_of(gpt: Any) -> Any:
        layers = gpt.decoder.layers
        return lambda i: int(layers[i].layer_number) - 1

    def build_model(self, recipe: Any) -> torch.nn.Module:
        """Collective: the recipe's model as Megatron ``GPTModel`` chunks holding this rank's
        shard of the canonical weights, wrapped for Megatron's DDP (see the module
        docstring)."""
        if self.unavailable:
            raise LmforgeError(self.unavailable)
        arch = recipe.architecture
        self.shape = shape = self._shape_of(arch)
        self._architecture = arch
        self._vocab = int(recipe.vocab_size)
        self._padded_vocab = padded_vocab_size(self._vocab, self.config.make_vocab_size_divisible_by,
                                               self.config.tensor_parallel)
        self._setup(recipe.seed)
        tconfig = self._tconfig = self._transformer_config(shape)
        spec = self._layer_spec(shape)
        chunks = []
        n_chunks = self.config.chunks
        for vp in range(n_chunks):
            vp_stage = vp if n_chunks > 1 else None
            first = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
            last = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gpt = GPTModel(
                    config=tconfig, transformer_layer_spec=spec, vocab_size=self._padded_vocab,
                    max_sequence_length=shape.max_seq_len, pre_process=first,
                    post_process=last, parallel_output=True,
                    share_embeddings_and_output_weights=shape.tie_embeddings,
                    position_embedding_type="rope", rotary_percent=1.0,
                    rotary_base=shape.rope_theta, vp_stage=vp_stage)
            chunks.append(gpt)
        self._load_canonical(chunks, self._canonical(recipe))
        wrapped = []
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=self.config.overlap_grad_reduce,
            use_distributed_optimizer=self.config.distributed_optimizer,
            check_for_nan_in_grad=False)
        for i, gpt in enumerate(chunks):
            gpt.to(self.device)
            module: torch.nn.Module = gpt
            if self.precision == "bf16":
                module = Float16Module(tconfig, module)
            wrapped.append(DistributedDataParallel(
                config=tconfig, ddp_config=ddp_config, module=module,
                disable_bucketing=i > 0))
        tconfig.no_sync_func = ([w.no_sync for w in wrapped] if len(wrapped) > 1
                                else wrapped[0].no_sync)
        if self.config.overlap_grad_reduce:
            tconfig.grad_sync_func = ([w.start_grad_sync for w in wrapped] if len(wrapped) > 1
                                      else wrapped[0].start_grad_sync)
        tconfig.finalize_model_grads_func = finalize_model_grads
        self._module = MegatronLM(self, wrapped, self._vocab, shape.max_seq_len)
        return self._module

    def _canonical(self, recipe: Any) -> dict[str, torch.Tensor]:
        """The canonical (HF-named) weights every rank starts from: the artifact's, or the
        seeded fresh CPU build's (the same on every rank and on every backend)."""
        state = recipe.initial_state()
        if state is None:
            state = recipe.build_full().state_dict()
        return self._architecture.to_hf(state)

    def _load_canonical(self, chunks: list[Any], canonical: Mapping[str, torch.Tensor]) -> None:
        lay = self.layout()
        shapes = canonical_shapes(self.shape, self._vocab)
        for name, sh in shapes.items():
            if name not in canonical or tuple(canonical[name].shape) != sh:
                got = tuple(canonical[name].shape) if name in canonical else "missing"
                raise LmforgeError(f"backend 'megatron': canonical weight {name!r} is {got}, "
                                   f"expected {sh} from the architecture's description")
        with torch.no_grad():
            for gpt in chunks:
                layer_of = self._layer_of(gpt)
                for key, param in gpt.named_parameters():
                    value = local_tensor(key, param, canonical, lay, layer_of)
                    if value is not None:
                        param.copy_(value.to(param.dtype))

    def build_optimizer(self, module: torch.nn.Module, optim: Any) -> Any:
        """Megatron's optimizer (AdamW with decoupled weight decay, clipping at
        ``optim.grad_clip``, fp32 master weights in bf16, the distributed optimizer when
        configured); the trainer sets the learning rate of every group each step."""
        c = OptimizerConfig(
            optimizer="adam", lr=optim.lr, min_lr=optim.lr * optim.min_lr_ratio,
            weight_decay=optim.weight_decay, adam_beta1=optim.betas[0],
            adam_beta2=optim.betas[1], adam_eps=optim.eps, clip_grad=optim.grad_clip,
            bf16=self.precision == "bf16", params_dtype=self.params_dtype,
            use_distributed_optimizer=self.config.distributed_optimizer,
            decoupled_weight_decay=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = get_megatron_optimizer(c, list(module.chunks))  # type: ignore[attr-defined]
        # Without Megatron's scheduler the groups' decay is set once: none on 1-D params.
        for g in opt.param_groups:
            g["weight_decay"] = optim.weight_decay * float(g.get("wd_mult", 1.0))
        return opt

    # -- stepping ------------------------------------------------------------------------------
    def _split(self, micro_batches: list[Mapping[str, torch.Tensor]]
               ) -> list[dict[str, torch.Tensor]]:
        mbs = self.config.micro_batch_size
        out = []
        for mb in micro_batches:
            b = next(iter(mb.values())).shape[0]
            size = mbs or b
            if b % size:
                raise LmforgeError(f"backend 'megatron': a micro-batch of {b} sequences is "
                                   f"not divisible by micro_batch_size {size}")
            for i in range(0, b, size):
                out.append({k: v[i:i + size] for k, v in mb.items()})
        return out

    def train_step(self, module: MegatronLM, optimizer: Any, loss_fn: Any,
                   micro_batches: list[Mapping[str, torch.Tensor]], max_norm: float
                   ) -> tuple[float, float, dict[str, float], int, float]:
        """One optimizer step through Megatron's schedule; returns ``(loss_sum, count,
        metric_sums, input_tokens, grad_norm)`` of this rank's data-parallel share (equal on
        its model-parallel peers). With MoE the router losses, which Megatron applies inside
        its layers, are added to ``loss_sum`` and reported as ``aux/<name>``."""
        from megatron.core.transformer.moe.moe_utils import get_moe_layer_wise_logging_tracker

        batches = self._split(micro_batches)
        chunks = list(module.chunks)
        for c in chunks:
            c.zero_grad_buffer()
        optimizer.zero_grad()
        results: list[tuple[float, float, dict[str, float]]] = []
        aux_weighted: dict[str, float] = {}
        tracker = get_moe_layer_wise_logging_tracker()

        def aux_now() -> dict[str, float]:
            return {k: float(v["values"].sum()) for k, v in tracker.items()}

        def loss_func(out: Any, output_tensor: torch.Tensor) -> tuple[Any, ...]:
            count = torch.as_tensor(out.count, device=output_tensor.device).to(torch.int)
            return output_tensor, count, {}

        def forward_step(data_iterator: Iterator[Any], chunk: torch.nn.Module) -> tuple[Any, Any]:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(data_iterator).items()}
            before = aux_now()
            module._stage = chunk
            try:
                out = loss_fn(module, batch)
            finally:
                module._stage = None
            hidden = module.take_stage_output()
            if "labels" in batch:
                n = float((batch["labels"] != IGNORE_INDEX).sum())
                for k, v in aux_now().items():
                    aux_weighted[k] = aux_weighted.get(k, 0.0) + (v - before.get(k, 0.0)) * n
            if hidden is not None:  # not the last stage: pass the hidden states on
                return hidden, None
            results.append((float(out.loss_sum.detach()), float(out.count),
                            {k: float(v) for k, v in out.metrics.items()}))
            return out.loss_sum, partial(loss_func, out)

        n = len(batches)
        iterators: Any = iter(batches)
        if len(chunks) > 1:
            iterators = [iter(batches) for _ in chunks]
        seq = max(int(b["input_ids"].shape[1]) for b in batches)
        mbs = max(int(b["input_ids"].shape[0]) for b in batches)
        get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iterators,
            model=chunks if len(chunks) > 1 else chunks[0], num_microbatches=n,
            seq_length=seq, micro_batch_size=mbs, forward_only=False)
        update_ok, grad_norm, _ = optimizer.step()
        if grad_norm is None:
            grad_norm = optimizer.get_grad_norm()
        for k in list(tracker):
            tracker[k]["values"].zero_()
        loss_sum, count, metrics = self._from_last_stage(results)
        aux = self._router_losses(aux_weighted)
        for name, value in aux.items():
            metrics[f"aux/{name}"] = value
            loss_sum += value
        tokens = sum(int(b["input_ids"].numel()) for b in micro_batches)
        return loss_sum, count, metrics, tokens, float(grad_norm)

    def _from_last_stage(self, results: list[tuple[float, float, dict[str, float]]]
                         ) -> tuple[float, float, dict[str, float]]:
        """The step's loss, count and metric sums, broadcast from the last pipeline stage."""
        loss = sum(r[0] for r in results)
        count = sum(r[1] for r in results)
        metrics: dict[str, float] = {}
        for r in results:
            for k, v in r[2].items():
                metrics[k] = metrics.get(k, 0.0) + v
        if self.pp == 1:
            return loss, count, metrics
        group = parallel_state.get_pipeline_model_parallel_group()
        ranks = torch.distributed.get_process_group_ranks(group)
        box = [(loss, count, metrics)]
        torch.distributed.broadcast_object_list(box, src=ranks[-1], group=group,
                                                device=self.comm_device)
        return box[0]  # type: ignore[return-value]

    def _router_losses(self, weighted: Mapping[str, float]) -> dict[str, float]:
        """The MoE router losses of the step as the local backend reports them: each micro-
        batch's layer-averaged loss times its coefficient, times its label count, summed."""
        if not self.shape.is_moe or not weighted:
            return {}
        total = {k: v for k, v in weighted.items()}
        if self.pp > 1:
            t = torch.tensor([total.get("load_balancing_loss", 0.0), total.get("z_loss", 0.0)],
                             dtype=torch.float64, device=self.comm_device)
            torch.distributed.all_reduce(t, group=parallel_state.get_pipeline_model_parallel_group())
            total = {"load_balancing_loss": float(t[0]), "z_loss": float(t[1])}
        s = self.shape
        out = {}
        if s.router_aux_loss_coef > 0 and "load_balancing_loss" in total:
            out["load_balancing"] = total["load_balancing_loss"] * s.router_aux_loss_coef / s.n_layers
        if s.router_z_loss_coef > 0 and "z_loss" in total:
            out["router_z"] = total["z_loss"] * s.router_z_loss_coef / s.n_layers
        return out

    def no_sync(self, module: torch.nn.Module) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()  # train_step drives Megatron's own no_sync

    def clip_grad_norm_(self, module: torch.nn.Module, max_norm: float) -> float:
        raise LmforgeError("backend 'megatron' clips inside its optimizer step (train_step)")

    def autocast(self) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()  # parameters are in the compute dtype already

    # -- checkpoints ---------------------------------------------------------------------------
    def _sharded(self, module: MegatronLM, optimizer: Any, loading: bool) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for i, chunk in enumerate(module.chunks):
            state[f"model{i}"] = gpt_of(chunk).sharded_state_dict()
        if optimizer is not None:
            # dp_reshardable: each rank saves and loads its own optimizer shard, no gathering
            # (a resume keeps the world size; the trainer refuses another one).
            state["optimizer"] = optimizer.sharded_state_dict(
                state, is_loading=loading,
                metadata={"distrib_optim_sharding_type": "dp_reshardable"})
        return state

    def _layout_record(self) -> dict[str, Any]:
        c = self.config
        return {"tensor_parallel": c.tensor_parallel, "pipeline_parallel": c.pipeline_parallel,
                "virtual_pipeline_stages": c.virtual_pipeline_stages,
                "context_parallel": c.context_parallel, "expert_parallel": c.expert_parallel,
                "expert_tensor_parallel": c.etp, "distributed_optimizer": c.distributed_optimizer,
                "precision": self.precision}

    def save_checkpoint(self, path: Path, module: torch.nn.Module, optimizer: Any) -> None:
        """Collective: model and optimizer through ``dist_checkpointing`` into ``path/dist``
        (each rank writes its shards), and ``megatron.json`` (layout, Adam step count)."""
        from lmforge.checkpoint import write_state

        folder = Path(path) / DIST_DIR
        folder.mkdir(parents=True, exist_ok=True)
        torch.distributed.barrier()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dist_checkpointing.save(self._sharded(module, optimizer, False), str(folder))  # type: ignore[arg-type]
        if self.is_main:
            write_state(Path(path), "megatron", {"layout": self._layout_record(),
                                                 "adam_step": _adam_step(optimizer)})

    def load_checkpoint(self, path: Path, module: torch.nn.Module, optimizer: Any) -> None:
        """Collective: restore what :meth:`save_checkpoint` wrote (same layout)."""
        from lmforge.checkpoint import read_state

        meta = read_state(Path(path), "megatron")
        if meta["layout"] != self._layout_record():
            diff = {k: (v, self._layout_record().get(k)) for k, v in meta["layout"].items()
                    if self._layout_record().get(k) != v}
            raise LmforgeError(f"backend 'megatron': the checkpoint {path} was written with "
                               f"another layout (saved, now): {diff}; resume with the same "
                               f"layout, or start the stage over with --force")
        folder = Path(path) / DIST_DIR
        if optimizer is not None:
            _init_adam_state(optimizer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sharded = self._sharded(module, optimizer, True)  # type: ignore[arg-type]
            state = dist_checkpointing.load(sharded, str(folder))
        for i, chunk in enumerate(module.chunks):  # type: ignore[attr-defined]
            gpt_of(chunk).load_state_dict(state[f"model{i}"])
        if optimizer is not None:
            with torch.no_grad():  # copies into the (fp32) master weights, which are leaves
                optimizer.load_state_dict(state["optimizer"])
            if meta.get("adam_step") is not None:
                _set_adam_step(optimizer, float(meta["adam_step"]))

    def full_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """Collective: the whole model in the architecture's names (fp32, CPU) on the main
        rank, gathered from every rank's shards (one data-parallel copy of each) and converted
        back through the canonical names; ``None`` elsewhere."""
        lay = self.layout()
        shapes = canonical_shapes(self.shape, self._vocab)
        dp0 = parallel_state.get_data_parallel_rank() == 0
        edp0 = parallel_state.get_expert_data_parallel_rank() == 0
        pieces = []
        for chunk in module.chunks:  # type: ignore[attr-defined]
            gpt = gpt_of(chunk)
            layer_of = self._layer_of(gpt)
            for key, param in gpt.named_parameters():
                if self.shape.tie_embeddings and key == "output_layer.weight":
                    continue
                seg = segments(key, lay, layer_of)
                if seg is None:
                    continue
                expert = not getattr(param, "allreduce", True)
                if not (edp0 if expert else dp0):
                    continue
                if is_replicated(seg[1], shapes, seg[0]) and (
                        lay.etp_rank if expert else lay.tp_rank) != 0:
                    continue
                pieces += local_pieces(key, param.detach().float().cpu(), lay, layer_of)
        if self.world_size > 1:
            gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
            torch.distributed.gather_object(pieces, gathered, dst=0, group=self._gather_group)
            if not self.is_main:
                return None
            pieces = [p for part in gathered for p in part]  # type: ignore[union-attr]
        canonical = assemble(pieces, self.shape, self._vocab)
        return {k: v.float() for k, v in self._architecture.from_hf(canonical).items()}

    # -- collectives ---------------------------------------------------------------------------
    def all_reduce_mean(self, value: float) -> float:
        if self.world_size == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.comm_device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world_size

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        """Release Megatron's process groups (a later stage builds its own)."""
        if self._ready and parallel_state.model_parallel_is_initialized():
            parallel_state.destroy_model_parallel()
        self._ready = False

    def describe(self) -> str:
        te = "Transformer Engine" if self.use_te else "Megatron-Core local layers"
        extras = [self.precision, te, self.config.describe_layout(), f"DP={self.dp_size}"]
        if self.config.sequence_parallel:
            extras.append("sequence parallel")
        if self.config.distributed_optimizer:
            extras.append("distributed optimizer")
        if self.config.recompute != "none":
            extras.append(f"{self.config.recompute} recomputation")
        return (f"megatron backend on {self.device} ({', '.join(extras)}, "
                f"{self.world_size} ranks)")
