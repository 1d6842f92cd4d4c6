"""Config of the ``dpo`` and ``reward-model`` stages (light: pydantic and lmforge only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from lmforge import Config
from lmforge.training.config import (
    TrainLoopConfig,
    check_backend_fits,
    check_seq_len_fits,
    init_architecture,
)


class DPOConfig(Config):
    """Direct preference optimisation against a frozen reference (the init model)."""

    beta: float = Field(default=0.1, gt=0, description="Strength of the KL constraint to the "
                        "reference: the implicit reward is beta * log(pi / pi_ref).")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        default="sigmoid", description="sigmoid: the DPO paper's -log sigmoid(beta * margin); "
        "ipo: (margin - 1/(2 beta))^2 (Azar et al.); hinge: relu(1 - beta * margin) (SLiC).")
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=0.5, description="Assumed "
                                   "fraction of flipped labels (conservative DPO; sigmoid only).")
    loop: TrainLoopConfig = Field(
        default_factory=TrainLoopConfig,
        description="Steps, batch (pairs per micro-batch), seq_len (prompt + response), "
                    "optimizer, backend. DPO usually wants a small lr (e.g. 5e-7 to 5e-6).")
    num_proc: int = Field(default=1, ge=1, le=1024,
                          description="Processes used to tokenise the dataset.")
    eval_batches: int = Field(default=20, ge=0, description="At most this many batches of the "
                              "dataset's 'heldout' split are evaluated at the end (0: none).")

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        """Validation of the wiring: ``loop.seq_len`` fits the init model's max_seq_len when
        the spec fixes its architecture (checked again from model.json at run time)."""
        arch, what = init_architecture(inputs)
        check_seq_len_fits(self.loop, arch, what)
        check_backend_fits(self.loop, arch, what)

    def output_architecture(self, inputs: Mapping[str, Any]) -> Any:
        """Preference optimisation keeps the architecture of the ``init`` model."""
        return init_architecture(inputs)[0]

    def estimate(self, upstream: Mapping[str, Any]) -> dict[str, Any]:
        """Tokens through the policy (chosen + rejected) and, when the init stage's
        architecture is known, parameters and FLOPs (policy forward+backward, reference once)."""
        from lmforge.training.stagekit import upstream_estimate

        out = upstream_estimate(self, upstream, getattr(upstream.get("init"), "model", None))
        out["tokens"] *= 2
        if "train FLOPs" in out:
            out["train FLOPs"] *= 2
        return out


class RewardModelConfig(Config):
    """A Bradley-Terry reward model: the init model with a score head, trained on pairs."""

    margin: float = Field(default=0.0, ge=0.0, description="Constant margin m in the loss "
                          "-log sigmoid(r_chosen - r_rejected - m): the chosen reply must win "
                          "by at least m before the loss flattens (Llama 2 uses a per-pair "
                          "margin from rating gaps: see margin_column).")
    margin_column: str | None = Field(default=None, description="A numeric column of the "
                                      "dataset added to margin per pair (e.g. how much better "
                                      "the chosen reply was rated); null: none.")
    center_coef: float = Field(default=0.0, ge=0.0, description="Weight of the centring "
                               "penalty center_coef * (r_chosen + r_rejected)^2, which keeps "
                               "rewards near zero mean (Eisenstein et al. 2023); the "
                               "Bradley-Terry loss alone only fixes differences. 0.01 is a "
                               "common value; 0: off.")
    loop: TrainLoopConfig = Field(
        default_factory=TrainLoopConfig,
        description="Steps, batch (pairs per micro-batch), seq_len (prompt + reply, longer "
                    "pairs are cut as DPO cuts them), optimizer, backend.")
    num_proc: int = Field(default=1, ge=1, le=1024,
                          description="Processes used to tokenise the dataset.")
    eval_batches: int = Field(default=20, ge=0, description="At most this many batches of the "
                              "dataset's 'heldout' split are scored before and after training "
                              "(0: none).")

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        """``loop.seq_len`` fits the init model when the spec fixes its architecture."""
        arch, what = init_architecture(inputs)
        check_seq_len_fits(self.loop, arch, what)
        check_backend_fits(self.loop, arch, what)

    def output_architecture(self, inputs: Mapping[str, Any]) -> Any:
        """The init model's architecture with a score head (``head: score``)."""
        arch = init_architecture(inputs)[0]
        change = getattr(arch, "with_head", None)
        return change("score") if callable(change) else None

    def estimate(self, upstream: Mapping[str, Any]) -> dict[str, Any]:
        """Tokens through the model (chosen + rejected) and, when the init stage's architecture
        is known, parameters and FLOPs."""
        from lmforge.training.stagekit import upstream_estimate

        out = upstream_estimate(self, upstream, getattr(upstream.get("init"), "model", None))
        out["tokens"] *= 2
        if "train FLOPs" in out:
            out["train FLOPs"] *= 2
        return out
