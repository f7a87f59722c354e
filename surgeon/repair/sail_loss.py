"""SAIL's objective: token-weighted DPO as pure functions over per-token tensors.

Every tensor here is aligned on *target* positions: entry ``[i, t]`` is about the token that
position ``t + 1`` of row ``i`` holds, predicted from position ``t`` (so a sequence of ``W``
tokens has ``W - 1`` targets). ``mask`` marks the response tokens; everything else is ignored.

The loss of one preference pair (methods.md section 3)::

    -log sigmoid( beta * ( sum_t w_t^c d_t^c  -  sum_t w_t^r d_t^r ) ),
    d_t = log pi(y_t) - log pi_ref(y_t)

With every weight 1 it is the DPO loss (Rafailov et al.). The weightings:

``attention`` (SAIL as its abstract describes it)
    ``w_t`` is the attention that the focal heads pay to the system-instruction span when they
    predict token ``t`` (the query row at the position before it), under the reference policy,
    divided by its mean over the response: mean 1 per response.
``uniform``
    ``w_t = 1``: plain DPO.
``reference`` (TGDPO, Zhu et al. 2025, the released SAIL code's weights)
    ``w_t^c = 1 + alpha * beta * r_t`` on the chosen response and ``w_t^r = 1 - alpha * beta * r_t``
    on the rejected one, with ``r_t = log pi_base(y_t) - log pi_ref(y_t)`` the token log-ratio of
    the aligned base against the reference; clamped at 0 so that no token's gradient flips sign.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor


@dataclass(frozen=True)
class PairLoss:
    """The loss of a batch of preference pairs and its parts."""

    loss: Float[Tensor, ""]
    """Mean over the pairs of ``-log sigmoid(beta * margin)``."""
    losses: Float[Tensor, " pairs"]
    """Each pair's loss."""
    chosen_rewards: Float[Tensor, " pairs"]
    """``beta * sum_t w_t^c d_t^c`` (the implicit reward of the chosen response)."""
    rejected_rewards: Float[Tensor, " pairs"]
    """``beta * sum_t w_t^r d_t^r``."""

    @property
    def margins(self) -> Float[Tensor, " pairs"]:
        """Chosen minus rejected reward."""
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> float:
        """Share of pairs whose chosen reward is above the rejected one."""
        return float((self.margins > 0).float().mean()) if self.margins.numel() else 0.0


def token_logps(
    logits: Float[Tensor, "batch pos vocab"],
    input_ids: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch targets"],
) -> Float[Tensor, "batch targets"]:
    """Log-probability of each target token (``input_ids[:, 1:]``) under ``logits[:, :-1]``,
    computed only where ``mask`` is set (0 elsewhere), in float32."""
    targets = input_ids[:, 1:]
    if mask.shape != targets.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, targets {tuple(targets.shape)}")
    out = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    if not bool(mask.any()):
        return out
    picked = logits[:, :-1][mask].float()  # only the response positions: [n, vocab]
    logp = F.log_softmax(picked, dim=-1).gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
    return out.masked_scatter(mask, logp)


def weighted_sum(
    policy: Float[Tensor, "batch targets"],
    reference: Float[Tensor, "batch targets"],
    mask: Bool[Tensor, "batch targets"],
    weights: Float[Tensor, "batch targets"],
) -> Float[Tensor, " batch"]:
    """``sum_t w_t (log pi - log pi_ref)`` over the masked tokens of each row."""
    return ((policy - reference) * weights * mask).sum(-1)


def sail_loss(
    policy_chosen: Float[Tensor, "pairs targets"],
    reference_chosen: Float[Tensor, "pairs targets"],
    mask_chosen: Bool[Tensor, "pairs targets"],
    weights_chosen: Float[Tensor, "pairs targets"],
    policy_rejected: Float[Tensor, "pairs targets"],
    reference_rejected: Float[Tensor, "pairs targets"],
    mask_rejected: Bool[Tensor, "pairs targets"],
    weights_rejected: Float[Tensor, "pairs targets"],
    beta: float,
) -> PairLoss:
    """Token-weighted DPO (module docstring); uniform weights give the DPO loss."""
    chosen = beta * weighted_sum(policy_chosen, reference_chosen, mask_chosen, weights_chosen)
    rejected = beta * weighted_sum(
        policy_rejected, reference_rejected, mask_rejected, weights_rejected
    )
    losses = -F.logsigmoid(chosen - rejected)
    return PairLoss(losses.mean(), losses, chosen.detach(), rejected.detach())


def response_nll(
    policy: Float[Tensor, "pairs targets"], mask: Bool[Tensor, "pairs targets"]
) -> Float[Tensor, ""]:
    """Mean negative log-likelihood per response token (the optional SFT term on the chosen
    responses, ``sft_weight``; RPO, Pang et al. 2024)."""
    return -(policy * mask).sum() / mask.sum().clamp(min=1)


def uniform_weights(mask: Bool[Tensor, "batch targets"]) -> Float[Tensor, "batch targets"]:
    """1 on every response token (plain DPO)."""
    return mask.float()


def attention_weights(
    mass: Float[Tensor, "batch targets"], mask: Bool[Tensor, "batch targets"], eps: float = 1e-8
) -> Float[Tensor, "batch targets"]:
    """``mass`` normalised to mean 1 over each row's response tokens (0 elsewhere).

    A row whose response gets no system attention at all (no system span) falls back to 1 on
    every response token.
    """
    m = mass.float() * mask
    count = mask.sum(-1, keepdim=True).clamp(min=1)
    mean = m.sum(-1, keepdim=True) / count
    uniform = mask.float()
    return torch.where(mean > eps, m / mean.clamp(min=eps), uniform)


def reference_weights(
    base_logps: Float[Tensor, "batch targets"],
    reference_logps: Float[Tensor, "batch targets"],
    mask: Bool[Tensor, "batch targets"],
    *,
    alpha: float,
    beta: float,
    chosen: bool,
) -> Float[Tensor, "batch targets"]:
    """TGDPO-style weights: ``1 +/- alpha * beta * r_t`` (``+`` for the chosen response),
    ``r_t = log pi_base - log pi_ref``, clamped at 0, and 0 off the response."""
    r = base_logps.float() - reference_logps.float()
    sign = 1.0 if chosen else -1.0
    return (1.0 + sign * alpha * beta * r).clamp(min=0.0) * mask
