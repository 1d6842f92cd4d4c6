"""Config of the ``dpo`` stage (light: pydantic and lmforge only)."""

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
