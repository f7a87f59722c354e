"""The pure core of rollback: score entries, pick a global top-k, copy them from the base.

Scores are per-tensor flat vectors in which non-candidates hold ``-inf``; every candidate has a
finite score. :func:`select_entries` streams over tensors twice (a running top-k, then a pick
above the threshold), so it never holds more than one tensor's scores plus ``2k`` values.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

import torch
from torch import Tensor

CANDIDATE = 0
"""State of an entry that may still be restored."""
RESTORED = 1
"""State of an entry copied from the base."""
BLOCKED = 2
"""State of an entry that is never a candidate (equal to the base, or it would hurt the task)."""
PUT_BACK = 3
"""State of an entry restored and then put back by the tolerance rollback."""
TASK_HOLD = 4
"""State of an entry whose restoration would raise the task loss (to first order, at the
current weights); re-evaluated whenever the task gradient is refreshed."""

NOT_CANDIDATE = float("-inf")

K = TypeVar("K", bound=Hashable)
"""What a score vector belongs to: a tensor's name, or a chunk of one."""


def paper_scores(grad: Tensor, weight: Tensor, base: Tensor, state: Tensor) -> Tensor:
    """Published rule: ``|g|`` where ``sign(W - A) == sign(g) != 0`` (a descent step moves the
    entry toward the base) and the entry is a candidate; ``-inf`` elsewhere."""
    delta_sign = torch.sign(weight - base)
    ok = (delta_sign == torch.sign(grad)) & (delta_sign != 0) & (state == CANDIDATE)
    return torch.where(ok, grad.abs(), torch.full_like(grad, NOT_CANDIDATE))


def benefit_scores(grad: Tensor, weight: Tensor, base: Tensor, state: Tensor) -> Tensor:
    """Task-aware rule: the first-order decrease of the harmful loss, ``g * (W - A)``, where it
    is positive and the entry is a candidate; ``-inf`` elsewhere.

    Restoring moves ``W`` by ``A - W``; the loss changes by ``g * (A - W)`` to first order, so
    ``g * (W - A) > 0`` means restoring lowers it.
    """
    benefit = grad * (weight - base)
    ok = (benefit > 0) & (state == CANDIDATE)
    return torch.where(ok, benefit, torch.full_like(benefit, NOT_CANDIDATE))


def task_blocked(task_grad: Tensor, weight: Tensor, base: Tensor) -> Tensor:
    """Entries whose restoration raises the task loss to first order: ``g_t * (A - W) > 0``."""
    return task_grad * (base - weight) > 0


def select_entries(
    scores: Callable[[K], Tensor] | Mapping[K, Tensor],
    names: Sequence[K],
    k: int,
    on_pick: Callable[[K, Tensor], None] | None = None,
) -> dict[K, Tensor]:
    """Flat indices of the global top ``min(k, #candidates)`` scores over tensors ``names``.

    ``scores`` maps a name to its flat score vector (``-inf`` = not a candidate); a callable is
    called twice per name and must return the same values both times. Ties at the threshold
    are broken by tensor order, then by index, so exactly ``min(k, #candidates)`` are chosen.
    ``on_pick(name, indices)`` runs as soon as a tensor's picks are known (in the second pass,
    while that tensor's scores are current), e.g. to restore them before the next tensor.
    Returns sorted int64 indices for each name with at least one pick.
    """
    get = scores.__getitem__ if isinstance(scores, Mapping) else scores
    if k <= 0 or not names:
        return {}
    best: Tensor | None = None
    n_candidates = 0
    for name in names:
        s = get(name).reshape(-1)
        finite = s[s > NOT_CANDIDATE]
        n_candidates += finite.numel()
        if finite.numel() == 0:
            continue
        top = torch.topk(finite.double(), min(k, finite.numel())).values
        if best is None:
            best = top
            continue
        merged = torch.cat([best, top])
        best = torch.topk(merged, min(k, merged.numel())).values
    if n_candidates == 0 or best is None:
        return {}
    take_all = n_candidates <= k
    tau = float(best[-1]) if not take_all else NOT_CANDIDATE
    quota = 0 if take_all else k - int((best > tau).sum())
    picked: dict[K, Tensor] = {}
    for name in names:
        s = get(name).reshape(-1).double()
        if take_all:
            idx = torch.nonzero(s > NOT_CANDIDATE).reshape(-1)
        else:
            idx = torch.nonzero(s > tau).reshape(-1)
            if quota > 0:
                ties = torch.nonzero(s == tau).reshape(-1)[:quota]
                quota -= ties.numel()
                idx = torch.cat([idx, ties]).sort().values
        if idx.numel():
            picked[name] = idx
            if on_pick is not None:
                on_pick(name, idx)
    return picked


def restore(weight: Tensor, base: Tensor, indices: Tensor) -> Tensor:
    """Copy ``base`` into ``weight`` at flat ``indices`` (in place); return the old values."""
    flat = weight.data.view(-1)
    old = flat[indices].clone()
    flat[indices] = base.reshape(-1)[indices].to(flat.dtype)
    return old


def put_back(weight: Tensor, indices: Tensor, values: Tensor) -> None:
    """Write ``values`` into ``weight`` at flat ``indices`` (in place): undo a restoration."""
    weight.data.view(-1)[indices] = values.to(weight.dtype)
