"""SAIL's training loop: a short loop on accelerate's ``Accelerator``, not a TRL subclass.

Why not TRL's ``DPOTrainer``: it sums per-token log-probs inside its forward and weights only
whole sequences, so token weights need a custom collator *and* an override of its
``concatenated_forward`` and loss, the reference pass (with the focal heads' attention, read
under eager attention) would be a third override, and TRL would become a dependency (it is not
installed) whose private methods change between releases. The loop here is about 100 lines
that read as the method: one no-grad reference pass with the adapter disabled gives each
response token its reference log-prob and weight, then each step is one forward of the chosen
and rejected rows together, :func:`surgeon.repair.sail_loss.sail_loss`, backward, AdamW. The
loop never knows which weighting is in use.

The same code runs on one CPU, one GPU and data-parallel under ``accelerate launch``::

    accelerate launch --multi_gpu --num_processes 4 $(which surgeon) repair MODEL \\
        --base BASE --method sail --device cuda --out DIR

(on CPUs the same ``--multi_gpu --num_processes 2`` with ``--device cpu``: torchrun starts the
processes and ``Accelerator(cpu=True)`` joins them in a gloo group; ``--cpu --num_processes 2``
starts one process unless accelerate is configured for MPI. A test runs two CPU processes.)
Only the training is data-parallel: ``Accelerator.prepare_model`` wraps the model in DDP,
every process draws the same seeded order of global batches and takes its share of each
(``batch_size`` pairs over all processes), DDP averages the gradients, so every process holds
the same adapter after every step. Generation (pairs, checks, before/after measurements) runs
whole on every process, the early-stop decision is the main process's, broadcast, and only
the main process writes the adapter.
"""

from __future__ import annotations

import atexit
import functools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import Tensor, nn

from surgeon.errors import RuntimeFailure
from surgeon.progress import progress
from surgeon.repair.sail_config import SailConfig
from surgeon.repair.sail_data import EncodedPair, collate, place_tokens
from surgeon.repair.sail_lora import ReferenceTokens
from surgeon.repair.sail_loss import (
    attention_weights,
    reference_weights,
    response_nll,
    sail_loss,
    token_logps,
)


def make_accelerator(device: str) -> Accelerator:
    """The process's ``Accelerator``: CPU when ``device`` is ``cpu``, else accelerate's device
    (the process's GPU under ``accelerate launch``). With several processes, their process
    group is destroyed when the interpreter exits (:func:`_end_process_group_at_exit`)."""
    accelerator = Accelerator(cpu=device == "cpu")
    if accelerator.num_processes > 1:
        _end_process_group_at_exit()
    return accelerator


@functools.cache
def _end_process_group_at_exit() -> None:
    """Register, once, the process group's destruction at exit: a gloo group left to the C++
    destructors after the interpreter aborted a process ("terminate called without an active
    exception", SIGABRT, exit -6) in a CI run of tests/test_sail_ddp.py."""
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@dataclass(frozen=True)
class TokenData:
    """Everything the loss needs besides the policy: per pair and response token."""

    pairs: tuple[EncodedPair, ...]
    """The pairs as token ids."""
    reference_chosen: tuple[Tensor, ...]
    """Reference log-probs of each chosen response's tokens."""
    reference_rejected: tuple[Tensor, ...]
    """The same for the rejected responses."""
    weights_chosen: tuple[Tensor, ...]
    """Token weights of each chosen response."""
    weights_rejected: tuple[Tensor, ...]
    """Token weights of each rejected response."""


def _vectors(fn: Callable[..., Tensor], *columns: Sequence[Tensor], **kw: object) -> list[Tensor]:
    """``fn`` applied to each pair's 1-D token vectors as a one-row batch."""
    out = []
    for row in zip(*columns, strict=True):
        mask = torch.ones((1, row[0].numel()), dtype=torch.bool)
        out.append(fn(*(v.reshape(1, -1) for v in row), mask, **kw)[0])
    return out


def token_data(
    pairs: Sequence[EncodedPair],
    reference: ReferenceTokens,
    weighting: str,
    *,
    base: ReferenceTokens | None = None,
    alpha: float = 1.0,
    beta: float = 0.1,
) -> TokenData:
    """The loss's inputs for ``weighting`` (``attention`` needs the reference pass's masses,
    ``reference`` the base's log-probs)."""
    ref_c, ref_r = reference.chosen_logps, reference.rejected_logps
    if weighting == "uniform":
        w_c = [torch.ones_like(v) for v in ref_c]
        w_r = [torch.ones_like(v) for v in ref_r]
    elif weighting == "attention":
        if reference.chosen_mass is None or reference.rejected_mass is None:
            raise ValueError("attention weights need the reference pass's attention masses")
        w_c = _vectors(attention_weights, reference.chosen_mass)
        w_r = _vectors(attention_weights, reference.rejected_mass)
    elif weighting == "reference":
        if base is None:
            raise ValueError("reference weights need the base's log-probs")
        kw = {"alpha": alpha, "beta": beta}
        w_c = _vectors(reference_weights, base.chosen_logps, ref_c, chosen=True, **kw)
        w_r = _vectors(reference_weights, base.rejected_logps, ref_r, chosen=False, **kw)
    else:
        raise ValueError(f"unknown weighting {weighting!r}")
    return TokenData(tuple(pairs), tuple(ref_c), tuple(ref_r), tuple(w_c), tuple(w_r))


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step."""

    step: int
    """1-based step."""
    loss: float
    """Mean loss of the step's pairs (over all processes)."""
    margin: float
    """Mean reward margin (chosen minus rejected) of the step's pairs."""
    accuracy: float
    """Share of the step's pairs whose chosen reward is above the rejected one."""
    lr: float
    """Learning rate of the step."""
    check_rate: float | None = None
    """The check split's violation (or harmful) rate after the step, when measured."""


@dataclass(frozen=True)
class TrainOutcome:
    """What the loop did."""

    steps: tuple[StepRecord, ...]
    """Every step, in order."""
    stop_reason: str
    """``target`` (the check split reached the base's rate), ``steps`` or ``no_steps``."""


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def global_batches(n_pairs: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """The pair indices of each step: seeded epochs of shuffled pairs, ``batch_size`` a step
    (a batch never spans two epochs; the last short one of an epoch is kept)."""
    rng = random.Random(seed)
    out: list[list[int]] = []
    while len(out) < steps:
        order = list(range(n_pairs))
        rng.shuffle(order)
        out.extend(order[i : i + batch_size] for i in range(0, n_pairs, batch_size))
    return out[:steps]


def _grid(values: Sequence[Tensor], rows: Sequence[int], mask: Tensor) -> Tensor:
    return place_tokens([values[i] for i in rows], mask)


def train(
    model: nn.Module,
    data: TokenData,
    config: SailConfig,
    accelerator: Accelerator,
    pad_id: int,
    *,
    check: Callable[[], float] | None = None,
    target: float | None = None,
) -> TrainOutcome:
    """Train the model's trainable parameters (the LoRA adapter) on ``data``, in place.

    ``check`` (run every ``config.check_every`` steps) gives the check split's rate; the loop
    stops once it is at most ``target``.
    """
    n = len(data.pairs)
    if config.steps == 0 or n == 0:
        return TrainOutcome((), "no_steps")
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size < world:
        raise RuntimeFailure(
            f"batch_size {config.batch_size} is smaller than the {world} processes; give each "
            "process at least one pair a step"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: _lr_factor(s, config.warmup_steps, config.steps)
    )
    wrapped = accelerator.prepare_model(model)
    device = accelerator.device
    records: list[StepRecord] = []
    stop = "steps"
    wrapped.train()
    try:
        batches = global_batches(n, config.batch_size, config.steps, config.seed)
        for step, rows_all in enumerate(progress(batches, desc="SAIL steps"), 1):
            rows = rows_all[rank::world]
            batch = collate([data.pairs[i] for i in rows], pad_id, device)
            k = len(rows)
            mask = batch.target_mask
            ref = torch.cat(
                [
                    _grid(data.reference_chosen, rows, mask[:k]),
                    _grid(data.reference_rejected, rows, mask[k:]),
                ]
            )
            weights = torch.cat(
                [
                    _grid(data.weights_chosen, rows, mask[:k]),
                    _grid(data.weights_rejected, rows, mask[k:]),
                ]
            )
            logits = wrapped(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
            ).logits
            policy = token_logps(logits, batch.input_ids, mask)
            out = sail_loss(
                policy[:k], ref[:k], mask[:k], weights[:k],
                policy[k:], ref[k:], mask[k:], weights[k:],
                config.beta,
            )  # fmt: skip
            loss = out.loss
            if config.sft_weight > 0:
                loss = loss + config.sft_weight * response_nll(policy[:k], mask[:k])
            if not torch.isfinite(loss):
                raise RuntimeFailure(f"SAIL: the loss became {float(loss)} at step {step}")
            optim.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            lr = optim.param_groups[0]["lr"]
            optim.step()
            sched.step()
            stats = torch.tensor(
                [float(loss.detach()), float(out.margins.mean()), out.accuracy], device=device
            )
            stats = accelerator.reduce(stats, reduction="mean")
            rate = None
            if (
                check is not None
                and config.check_every
                and (step % config.check_every == 0 or step == len(batches))
            ):
                wrapped.eval()
                decided = [check()]
                wrapped.train()
                broadcast_object_list(decided, from_process=0)
                rate = float(decided[0])
            loss, margin, acc = (float(x) for x in stats.cpu())
            records.append(StepRecord(step, loss, margin, acc, lr, rate))
            if rate is not None and target is not None and rate <= target + 1e-12:
                stop = "target"
                break
    finally:
        model.eval()
        for p in params:
            p.grad = None
    accelerator.wait_for_everyone()
    return TrainOutcome(tuple(records), stop)
