"""The working model of a rollback repair: its eligible entries, their states and the log of
every restoration.

One working model ``W`` (the fine-tuned model F) is held in memory; the aligned base A is only
read tensor by tensor (:class:`surgeon.repair.lazy_base.LazyTensors`; for an adapter's own
parameters, :class:`surgeon.repair.adapter_space.AdapterBase`). Every restoration is
logged with F's old values, so checkpoints, the tolerance rollback and the final mask need no
second model copy; each eligible entry carries one uint8 state.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from surgeon.architecture import LayerList, embedding_parameters, is_norm_parameter
from surgeon.errors import InputError, RuntimeFailure
from surgeon.repair.lazy_base import BaseValues
from surgeon.repair.mask import RollbackMask
from surgeon.repair.rollback_config import RollbackConfig
from surgeon.repair.selection import (
    BLOCKED,
    CANDIDATE,
    NOT_CANDIDATE,
    PUT_BACK,
    RESTORED,
    TASK_HOLD,
    benefit_scores,
    paper_scores,
    put_back,
    restore,
    select_entries,
    task_blocked,
)

StepLog = dict[str, tuple[Tensor, Tensor]]
"""Per tensor: flat indices restored in one step and F's values there."""

Chunk = tuple[str, int, int]
"""A run ``[lo, hi)`` of one eligible tensor's flat entries, scored as one unit."""

SCORE_CHUNK = 1 << 22
"""Most entries scored at once (4M: a few 16 MB temporaries, whatever the tensor's size)."""


def eligible_parameters(
    model: nn.Module, layers: LayerList, layer: int, config: RollbackConfig
) -> list[tuple[str, nn.Parameter]]:
    """Parameters that rollback may restore: everything in decoder layers ``< layer``, without
    norms (unless ``include_norms``), plus the input embedding if ``include_embeddings``."""
    embeds = embedding_parameters(model)
    input_embeds = {id(p) for p in model.get_input_embeddings().parameters()}  # type: ignore[operator]
    out: list[tuple[str, nn.Parameter]] = []
    for name, param in model.named_parameters():
        idx = layers.index_of(name)
        if idx is not None and idx < layer:
            if is_norm_parameter(name, param) and not config.include_norms:
                continue
            out.append((name, param))
        elif name in embeds and config.include_embeddings and id(param) in input_embeds:
            out.append((name, param))
    if not out:
        raise InputError(f"no parameters are eligible for rollback below layer {layer}")
    return out


def decoder_entries(model: nn.Module, layers: LayerList) -> int:
    """Number of parameter entries inside the decoder layers."""
    return sum(p.numel() for n, p in model.named_parameters() if layers.index_of(n) is not None)


@dataclass
class Slot:
    """One eligible tensor of the working model and the state of each of its entries."""

    name: str
    param: nn.Parameter
    state: Tensor
    """uint8, flat: CANDIDATE, RESTORED, BLOCKED, PUT_BACK or TASK_HOLD."""
    acc: Tensor | None = None
    """The gradient accumulated since the last :meth:`Work.zero_grad`, flat, in the working
    precision (:meth:`Work.accumulate_in`); None: none yet, or ``.grad`` is used."""

    @property
    def active(self) -> bool:
        return bool((self.state == CANDIDATE).any())

    def has_grad(self) -> bool:
        return self.acc is not None or self.param.grad is not None

    def grad(self) -> Tensor:
        if self.acc is not None:
            return self.acc
        g = self.param.grad
        return torch.zeros_like(self.param.data).view(-1) if g is None else g.view(-1)


GRAD_BF16_ENTRIES = 10_000_000
"""``grad_dtype="auto"`` keeps the gradients in bf16 from this many eligible entries on (a
real model: half the memory of fp32 gradients, for a ranking that needs no more than bf16's
three significant digits); smaller models keep fp32."""


class Work:
    """The working model W, its eligible slots, the lazy base and the restoration logs."""

    def __init__(self, model: nn.Module, slots: list[Slot], base: BaseValues) -> None:
        self.model = model
        self.slots = {s.name: s for s in slots}
        self.base = base
        self.logs: list[StepLog] = []
        self.eligible = sum(s.state.numel() for s in slots)
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def accumulate_in(self, dtype: torch.dtype) -> None:
        """Keep each eligible tensor's gradient in ``dtype``: after every backward pass its
        ``.grad`` is added into the slot's own buffer and dropped, so only one tensor's fp32
        gradient is alive at a time. Undone by :meth:`close`."""
        for s in self.slots.values():

            def hook(param: Tensor, slot: Slot = s) -> None:
                g = param.grad
                if g is None:
                    return
                flat = g.detach().reshape(-1).to(dtype)
                slot.acc = flat if slot.acc is None else slot.acc.add_(flat)
                param.grad = None

            self._hooks.append(s.param.register_post_accumulate_grad_hook(hook))

    def close(self) -> None:
        """Remove the gradient hooks of :meth:`accumulate_in`."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def zero_grad(self) -> None:
        for s in self.slots.values():
            s.param.grad = None
            s.acc = None

    def restored(self) -> int:
        return sum(int((s.state == RESTORED).sum()) for s in self.slots.values())

    def _chunks(self) -> list[Chunk]:
        """The active slots cut into runs of at most ``SCORE_CHUNK`` entries, in order."""
        out: list[Chunk] = []
        for name, s in self.slots.items():
            if s.active:
                n = s.state.numel()
                out += [(name, lo, min(lo + SCORE_CHUNK, n)) for lo in range(0, n, SCORE_CHUNK)]
        return out

    def select_and_restore(self, selection: str, k: int) -> StepLog:
        """One step's choice (gradients already in ``.grad``) and the copy from the base.

        Scores are computed a chunk of one tensor at a time, so a large tensor (a 49k-token
        embedding) never has more than ``SCORE_CHUNK`` scores and temporaries alive."""
        score_fn = paper_scores if selection == "paper" else benefit_scores

        def scores(chunk: Chunk) -> Tensor:
            name, lo, hi = chunk
            s = self.slots[name]
            base = self.base(name).view(-1)[lo:hi]
            return score_fn(s.grad()[lo:hi], s.param.data.view(-1)[lo:hi], base, s.state[lo:hi])

        parts: dict[str, list[tuple[Tensor, Tensor]]] = {}

        def on_pick(chunk: Chunk, idx: Tensor) -> None:
            name, lo, _ = chunk
            s = self.slots[name]
            flat = idx + lo
            parts.setdefault(name, []).append((flat, restore(s.param, self.base(name), flat)))
            s.state[flat] = RESTORED

        select_entries(scores, self._chunks(), k, on_pick=on_pick)
        self.base.clear()
        return {
            name: (torch.cat([i for i, _ in ps]), torch.cat([o for _, o in ps]))
            for name, ps in parts.items()
        }

    def put_back_share(self, log: StepLog, fraction: float) -> int:
        """Put back the top ``fraction`` of this step's restorations, by ``|grad|`` among those
        a descent step would move back toward F (gradients already in ``.grad``)."""
        n_back = int(fraction * sum(int(i.numel()) for i, _ in log.values()))
        scores: dict[str, Tensor] = {}
        for name, (idx, old) in log.items():
            s = self.slots[name]
            g = s.grad()[idx]
            toward_f = g * (old - s.param.data.view(-1)[idx]) < 0
            scores[name] = torch.where(toward_f, g.abs(), torch.full_like(g, NOT_CANDIDATE))
        picked = select_entries(scores, list(scores), n_back)
        for name, pos in picked.items():
            idx, old = log[name]
            put_back(self.slots[name].param, idx[pos], old[pos])
            self.slots[name].state[idx[pos]] = PUT_BACK
            keep = torch.ones(idx.numel(), dtype=torch.bool, device=idx.device)
            keep[pos] = False
            log[name] = (idx[keep], old[keep])
        return sum(int(p.numel()) for p in picked.values())

    def restored_entries(self) -> StepLog:
        """Every entry now restored, per tensor, with F's value there (from the step logs)."""
        parts: dict[str, list[tuple[Tensor, Tensor]]] = {}
        for log in self.logs:
            for name, (idx, old) in log.items():
                keep = self.slots[name].state[idx] == RESTORED
                if bool(keep.any()):
                    parts.setdefault(name, []).append((idx[keep], old[keep]))
        return {
            name: (torch.cat([i for i, _ in ps]), torch.cat([o for _, o in ps]))
            for name, ps in parts.items()
        }

    def prune_share(self, n: int) -> StepLog:
        """Put back to F the ``n`` restored entries that the harmful loss needs least: the
        smallest first-order loss increase ``g * (F - A)`` (gradients already in ``.grad``).
        Returns what was put back, for :meth:`unprune`."""
        restored = self.restored_entries()
        scores: dict[str, Tensor] = {}
        for name, (idx, old) in restored.items():
            s = self.slots[name]
            scores[name] = -(s.grad()[idx] * (old - s.param.data.view(-1)[idx]))
        picked = select_entries(scores, list(scores), n)
        out: StepLog = {}
        for name, pos in picked.items():
            idx, old = restored[name]
            put_back(self.slots[name].param, idx[pos], old[pos])
            self.slots[name].state[idx[pos]] = PUT_BACK
            out[name] = (idx[pos], old[pos])
        return out

    def unprune(self, pruned: StepLog) -> None:
        """Restore again (from the base) the entries :meth:`prune_share` put back."""
        for name, (idx, _) in pruned.items():
            restore(self.slots[name].param, self.base(name), idx)
            self.slots[name].state[idx] = RESTORED
        self.base.clear()

    def revert_to(self, n_steps: int) -> None:
        """Undo every logged step after the first ``n_steps``."""
        while len(self.logs) > n_steps:
            for name, (idx, old) in self.logs.pop().items():
                put_back(self.slots[name].param, idx, old)
                self.slots[name].state[idx] = CANDIDATE

    def hold_for_task(self) -> int:
        """Re-evaluate TASK_HOLD from the task gradient in ``.grad``: candidates whose
        restoration would raise the task loss to first order are held; returns how many."""
        held = 0
        for name, s in self.slots.items():
            s.state[s.state == TASK_HOLD] = CANDIDATE
            if not s.has_grad() or not s.active:
                continue
            flat, grad, base = s.param.data.view(-1), s.grad(), self.base(name).view(-1)
            for lo in range(0, flat.numel(), SCORE_CHUNK):
                part = slice(lo, lo + SCORE_CHUNK)
                state = s.state[part]
                hold = task_blocked(grad[part], flat[part], base[part]) & (state == CANDIDATE)
                state[hold] = TASK_HOLD
                held += int(hold.sum())
        self.base.clear()
        return held

    def ceiling(self, measure: Callable[[], float]) -> float:
        """``measure()`` with every eligible tensor copied from the base, then W put back:
        the best any rollback at this layer can do. W's own values wait in a temporary
        safetensors file meanwhile (not a second in-memory copy of the eligible tensors) and
        come back bit for bit, one tensor at a time."""
        with tempfile.TemporaryDirectory(prefix="surgeon-ceiling-") as tmp:
            spill = Path(tmp) / "w.safetensors"
            save_file({n: s.param.data.contiguous() for n, s in self.slots.items()}, str(spill))
            try:
                with torch.no_grad():
                    for name, s in self.slots.items():
                        s.param.data.copy_(self.base(name))
                    self.base.clear()
                return measure()
            finally:
                with torch.no_grad():
                    # one open per tensor, as LazyTensors: no mapping of the whole file stays
                    for name, s in self.slots.items():
                        with safe_open(str(spill), framework="pt") as f:
                            s.param.data.copy_(f.get_tensor(name))

    def reset(self) -> None:
        """Back to F: undo all steps and make put-back entries candidates again."""
        self.revert_to(0)
        for s in self.slots.values():
            s.state[s.state == PUT_BACK] = CANDIDATE

    def mask(self, metadata: dict[str, str]) -> RollbackMask:
        indices, shapes = {}, {}
        for name, s in self.slots.items():
            idx = torch.nonzero(s.state == RESTORED).reshape(-1)
            if idx.numel():
                indices[name] = idx.cpu()
                shapes[name] = tuple(s.param.shape)
        return RollbackMask(indices, shapes, self.eligible, metadata)


def initial_slots(eligible: list[tuple[str, nn.Parameter]], base: BaseValues) -> list[Slot]:
    """Entry states: an entry equal to the base is never a candidate."""
    slots: list[Slot] = []
    for name, p in eligible:
        a = base(name)
        if tuple(a.shape) != tuple(p.shape):
            raise InputError(
                f"{base.directory}: {name} has shape {list(a.shape)}, the model {list(p.shape)}"
            )
        state = torch.full((p.numel(),), CANDIDATE, dtype=torch.uint8, device=p.device)
        state[p.data.view(-1) == a.view(-1)] = BLOCKED
        slots.append(Slot(name, p, state))
    base.clear()
    return slots


def check_finite(work: Work) -> None:
    for name, s in work.slots.items():
        if not torch.isfinite(s.param.data).all():
            raise RuntimeFailure(f"non-finite weights in {name} after a rollback step")
