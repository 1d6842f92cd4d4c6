"""Preference losses on sequence log-probabilities (pure functions of tensors)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss and implicit rewards.

    All inputs are ``[B]``: summed log-probabilities of the chosen (``y_w``) and rejected
    (``y_l``) responses under the policy and the reference. With the margin
    ``h = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))``:

    * ``sigmoid`` (Rafailov et al. 2023, eq. 7): ``-log sigmoid(beta * h)``; with label
      smoothing ``eps``: ``-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)``;
    * ``ipo`` (Azar et al. 2023): ``(h - 1 / (2 beta))^2``;
    * ``hinge`` (SLiC, Zhao et al. 2023): ``relu(1 - beta * h)``.

    Returns ``(losses [B], chosen_rewards [B], rejected_rewards [B])``; rewards are
    ``beta * (log pi - log ref)``, detached.
    """
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        losses = (-F.logsigmoid(beta * h) * (1.0 - label_smoothing)
                  - F.logsigmoid(-beta * h) * label_smoothing)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1.0 - beta * h)
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected sigmoid, ipo or hinge")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards
