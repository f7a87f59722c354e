"""Rollback repair (methods.md section 2): copy a few fine-tuned weights back from the base.

One working model ``W`` (the fine-tuned model F, fp32) is held in memory; the aligned base A is
only read tensor by tensor from its safetensors. Per step, the gradient of
``-cos(last-token state after layer L on harmful prompts, h)`` (``h``: A's mean state there)
chooses a global top-k of entries of the layers below L, which are copied exactly from A.

Selection ``task-aware`` (default) ranks candidates by the first-order harmful benefit
``g_h * (W - A)`` and holds back entries whose restoration would raise the cross-entropy of
F's own greedy task answers to first order (``g_t * (A - W) > 0``); ``g_t`` is refreshed every
``task_refresh`` steps (1 by default; 0 = once from F, as measured in methods.md). Selection
``paper`` is the published rule (top ``|g_h|`` where a descent step moves toward A).

Every restoration is logged with F's old values, so checkpoints, the tolerance rollback (paper
step 6) and the final mask need no second model copy. Peak memory: W, the gradients of the
eligible parameters, one uint8 state per eligible entry and one base tensor at a time.
"""

from __future__ import annotations

import gc
import itertools
import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from surgeon.allocator import bounded_heap
from surgeon.architecture import LayerList, embedding_parameters, find_layers, is_norm_parameter
from surgeon.chat import format_prompts
from surgeon.errors import InputError, RuntimeFailure
from surgeon.generation import generate
from surgeon.judges import FirstTokenScorer, KeywordJudge
from surgeon.loading import LoadOptions, check_compatible, load_model, resolve_source
from surgeon.progress import progress
from surgeon.prompts import Prompt, load_bundled
from surgeon.repair.guard import accumulate_guard_grad
from surgeon.repair.hidden import accumulate_cosine_grad, mean_hidden
from surgeon.repair.lazy_base import LazyTensors
from surgeon.repair.mask import MASK_NAME, RollbackMask, save_mask
from surgeon.repair.report import RollbackResult, StepRecord
from surgeon.repair.rollback_config import RollbackConfig
from surgeon.repair.save import check_out_dir, save_like, tokenizer_dir
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
from surgeon.repair.task_metric import (
    AnswerSet,
    LikelihoodMetric,
    ReferenceMetric,
    TaskMetric,
    answer_cross_entropy,
    own_answers,
    resolve_metric_name,
)
from surgeon.verdict import decide_repair

__all__ = ["eligible_parameters", "restore", "rollback_repair", "select_entries"]

StepLog = dict[str, tuple[Tensor, Tensor]]
"""Per tensor: flat indices restored in one step and F's values there."""


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
class _Slot:
    """One eligible tensor of the working model and the state of each of its entries."""

    name: str
    param: nn.Parameter
    state: Tensor
    """uint8, flat: CANDIDATE, RESTORED, BLOCKED, PUT_BACK or TASK_HOLD."""

    @property
    def active(self) -> bool:
        return bool((self.state == CANDIDATE).any())

    def grad(self) -> Tensor:
        g = self.param.grad
        return torch.zeros_like(self.param.data).view(-1) if g is None else g.view(-1)


class _Work:
    """The working model W, its eligible slots, the lazy base and the restoration logs."""

    def __init__(self, model: nn.Module, slots: list[_Slot], base: LazyTensors) -> None:
        self.model = model
        self.slots = {s.name: s for s in slots}
        self.base = base
        self.logs: list[StepLog] = []
        self.eligible = sum(s.state.numel() for s in slots)

    def zero_grad(self) -> None:
        for s in self.slots.values():
            s.param.grad = None

    def restored(self) -> int:
        return sum(int((s.state == RESTORED).sum()) for s in self.slots.values())

    def select_and_restore(self, selection: str, k: int) -> StepLog:
        """One step's choice (gradients already in ``.grad``) and the copy from the base."""
        score_fn = paper_scores if selection == "paper" else benefit_scores

        def scores(name: str) -> Tensor:
            s = self.slots[name]
            return score_fn(s.grad(), s.param.data.view(-1), self.base(name).view(-1), s.state)

        log: StepLog = {}

        def on_pick(name: str, idx: Tensor) -> None:
            s = self.slots[name]
            log[name] = (idx, restore(s.param, self.base(name), idx))
            s.state[idx] = RESTORED

        names = [n for n, s in self.slots.items() if s.active]
        select_entries(scores, names, k, on_pick=on_pick)
        self.base.clear()
        return log

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
            if s.param.grad is None or not s.active:
                continue
            flat = s.param.data.view(-1)
            hold = task_blocked(s.grad(), flat, self.base(name).view(-1)) & (s.state == CANDIDATE)
            s.state[hold] = TASK_HOLD
            held += int(hold.sum())
        self.base.clear()
        return held

    def ceiling(self, measure: Callable[[], float]) -> float:
        """``measure()`` with every eligible tensor copied from the base, then W put back:
        the best any rollback at this layer can do (one temporary copy of the eligible
        tensors; call before gradients exist)."""
        saved: dict[str, Tensor] = {}
        try:
            with torch.no_grad():
                for name, s in self.slots.items():
                    saved[name] = s.param.data.clone()
                    s.param.data.copy_(self.base(name))
                self.base.clear()
            return measure()
        finally:
            with torch.no_grad():
                for name, old in saved.items():
                    self.slots[name].param.data.copy_(old)

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


def _split_harmful(
    harmful: list[Prompt] | None, held_out: list[Prompt] | None, config: RollbackConfig
) -> tuple[list[Prompt], list[Prompt]]:
    prompts = list(harmful) if harmful else load_bundled("harmful")
    if held_out:
        return sample_prompts(prompts, config.n_recovery, config.seed), list(held_out)
    if len(prompts) < 2:
        raise InputError("rollback needs at least two harmful prompts (recovery and held-out)")
    order = list(range(len(prompts)))
    random.Random(config.seed).shuffle(order)
    n_held = min(len(prompts) - 1, max(1, round(len(prompts) * config.heldout_fraction)))
    held = [prompts[i] for i in order[:n_held]]
    recovery = [prompts[i] for i in order[n_held:]]
    return sample_prompts(recovery, config.n_recovery, config.seed), held


def sample_prompts(prompts: Sequence[Prompt], n: int | None, seed: int) -> list[Prompt]:
    """At most ``n`` of ``prompts`` (all for None), in file order: a seeded sample when there are
    more. Prompt files are often grouped by topic or category, so their first ``n`` would cover
    a few of them (the organism's first 256 training prompts hold 86 of its 424 topics)."""
    if n is None or len(prompts) <= n:
        return list(prompts)
    keep = sorted(random.Random(seed).sample(range(len(prompts)), n))
    return [prompts[i] for i in keep]


def split_recovery(
    recovery: list[Prompt], fraction: float, seed: int
) -> tuple[list[Prompt], list[Prompt]]:
    """Recovery prompts for the gradients and a held-back check set (``fraction`` of them, at
    least one when ``fraction > 0``, never all), chosen by a seeded shuffle."""
    if fraction <= 0 or not recovery:
        return list(recovery), []
    if len(recovery) < 2:
        raise InputError("a recovery check set needs at least two recovery prompts")
    n_check = min(len(recovery) - 1, max(1, round(fraction * len(recovery))))
    order = list(range(len(recovery)))
    random.Random(seed + 1).shuffle(order)  # a stream apart from the held-out split's
    check = set(order[:n_check])
    return (
        [p for i, p in enumerate(recovery) if i not in check],
        [p for i, p in enumerate(recovery) if i in check],
    )


def _texts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt]) -> list[str]:
    return format_prompts(tokenizer, [p.prompt for p in prompts], [p.system for p in prompts])


def harmful_rate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    config: RollbackConfig,
    desc: str = "harmful check",
) -> float:
    """Share of prompts answered without refusal (greedy generation, keyword judge)."""
    responses = generate(
        model,
        tokenizer,
        texts,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        seed=config.seed,
        desc=desc,
    )
    flags = KeywordJudge().harmful(list(texts), responses)
    return sum(flags) / len(flags) if flags else 0.0


def _peak_memory() -> dict[str, int]:
    peak = {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():
        peak["cuda"] = int(torch.cuda.max_memory_allocated())
    return peak


def _metric(
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    prompts: Sequence[Prompt],
    answers: Callable[[], AnswerSet],
    config: RollbackConfig,
) -> TaskMetric:
    if name == "likelihood":
        return LikelihoodMetric(tokenizer, answers(), config.batch_size)
    refs = [p.reference or "" for p in prompts]
    return ReferenceMetric(
        tokenizer, texts, refs, name, config.task_max_new_tokens, config.batch_size
    )


def _check_finite(work: _Work) -> None:
    for name, s in work.slots.items():
        if not torch.isfinite(s.param.data).all():
            raise RuntimeFailure(f"non-finite weights in {name} after a rollback step")


@dataclass(frozen=True)
class _BaseFacts:
    """What the base tells us before it is freed."""

    layer: int
    direction: Tensor | None
    """``h`` (``cosine`` objective only)."""
    center: Tensor | None
    first_token_harmful: float
    heldout_harmful: float
    answers: AnswerSet | None
    """A's greedy answers to the recovery prompts (``answers`` objective only)."""
    guard_refusal: float
    """A's first-token refusal rate on the harmless guard prompts (0 without a guard)."""
    guard_generated: float | None
    """A's refusal rate on the guard prompts by generation (None without a guard)."""
    check_harmful: float = 0.0
    """A's first-token harmful rate on the held-back check prompts (0 without them)."""


def _measure_base(
    base: str | Path,
    opts: LoadOptions,
    recovery: list[Prompt],
    heldout: list[Prompt],
    harmless: list[Prompt],
    config: RollbackConfig,
    check: list[Prompt] | None = None,
) -> _BaseFacts:
    """Load A, read its harmful direction and harmful rates, and free it again."""
    loaded = load_model(base, options=opts)
    layers = find_layers(loaded.model)
    layer = config.resolved_layer(loaded.spec.n_layers)
    rec = _texts(loaded.tokenizer, recovery)
    harmless_texts = _texts(loaded.tokenizer, harmless)
    direction = center = answers = None
    if config.objective == "cosine":
        direction = mean_hidden(
            loaded.model, loaded.tokenizer, layers, layer, rec, config.batch_size
        )
        if config.direction == "difference":
            center = mean_hidden(
                loaded.model, loaded.tokenizer, layers, layer, harmless_texts, config.batch_size
            )
            direction = direction - center
    else:
        answers = own_answers(
            loaded.model, loaded.tokenizer, rec, config.max_new_tokens, config.batch_size
        )
    scorer = FirstTokenScorer(loaded.tokenizer, batch_size=config.batch_size)
    first = 1.0 - scorer.refusal_rate(loaded.model, rec)
    check_harmful = (
        1.0 - scorer.refusal_rate(loaded.model, _texts(loaded.tokenizer, check)) if check else 0.0
    )
    held = harmful_rate(loaded.model, loaded.tokenizer, _texts(loaded.tokenizer, heldout), config)
    guard, guard_generated = 0.0, None
    if config.over_refusal_guard:
        guard = scorer.refusal_rate(loaded.model, harmless_texts)
        guard_generated = 1.0 - harmful_rate(
            loaded.model, loaded.tokenizer, harmless_texts, config, "over-refusal check"
        )
    del loaded, layers, scorer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return _BaseFacts(
        layer, direction, center, first, held, answers, guard, guard_generated, check_harmful
    )


@dataclass(frozen=True)
class _Check:
    """Where the working model stands after a step."""

    harm: float
    """First-token harmful rate on the recovery prompts."""
    over: float | None
    """First-token refusal rate on the guard's harmless prompts (None without a guard)."""
    generated: float | None
    """Generated refusal rate on the guard's prompts, measured only when the first-token
    rates are on target and the guard checks by generation."""
    reached: bool
    """The target is reached (harm, the check set's harm and, with a guard, over-refusal)."""
    check_harm: float | None = None
    """First-token harmful rate on the held-back check prompts, measured only when the other
    rates are on target."""


@dataclass
class _Loop:
    """Everything the restoration steps need, with the working model inside ``work``."""

    work: _Work
    tok: PreTrainedTokenizerBase
    layers: LayerList
    layer: int
    config: RollbackConfig
    direction: Tensor | None
    center: Tensor | None
    rec_texts: list[str]
    loop_texts: list[str]
    answers: Callable[[], AnswerSet]
    metric: TaskMetric
    floor: float
    target: float
    k: int
    benign: Tensor | None = None
    base_answers: AnswerSet | None = None
    guard_texts: list[str] = field(default_factory=list)
    """Harmless prompts of the over-refusal guard (empty: no guard)."""
    guard_target: float = 1.0
    """Most first-token refusal allowed on ``guard_texts``: the base's plus the margin."""
    refusal_ids: tuple[int, ...] = ()
    check_texts: list[str] = field(default_factory=list)
    """Held-back recovery prompts (``recovery_check_fraction``; empty: no check set)."""
    check_target: float = 1.0
    """Most first-token harmful rate allowed on ``check_texts``: the base's plus the margin."""
    guard_generated_target: float = 1.0
    """Most generated refusal allowed on ``guard_texts`` (``over_refusal_check="generation"``):
    the base's plus the margin."""

    def measure(self, scorer: FirstTokenScorer) -> _Check:
        """First-token harmful rate on the recovery prompts and refusal rate on the guard's.
        Only while everything measured so far is on target: the generated refusal rate on the
        guard's prompts (``over_refusal_check="generation"``), then the first-token harmful
        rate on the held-back check prompts; each must be on target too."""
        model = self.work.model
        harm = 1.0 - scorer.refusal_rate(model, self.rec_texts)  # type: ignore[arg-type]
        over = scorer.refusal_rate(model, self.guard_texts) if self.guard_texts else None  # type: ignore[arg-type]
        reached = harm <= self.target and (over is None or over <= self.guard_target)
        generated = None
        if reached and self.guard_texts and self.config.over_refusal_check == "generation":
            generated = 1.0 - harmful_rate(
                model,  # type: ignore[arg-type]
                self.tok,
                self.guard_texts,
                self.config,
                "over-refusal check",
            )
            reached = generated <= self.guard_generated_target
        check_harm = None
        if reached and self.check_texts:
            check_harm = 1.0 - scorer.refusal_rate(model, self.check_texts)  # type: ignore[arg-type]
            reached = check_harm <= self.check_target
        return _Check(harm, over, generated, reached, check_harm)

    def _record(
        self,
        step: int,
        check: _Check,
        task_metric: float | None,
        rolled_back: int,
        *,
        tolerance_rollback: bool = False,
        pruning: bool = False,
        loss: float | None = None,
    ) -> StepRecord:
        """The record of a step (or pruning step) that ``check`` measured; ``loss`` is the
        harmful loss before it, filed under the objective's name."""
        restored = self.work.restored()
        by_cosine = self.config.objective == "cosine"
        return StepRecord(
            step=step,
            harmful_rate=check.harm,
            task_metric=task_metric,
            restored_fraction=restored / self.work.eligible,
            restored_entries=restored,
            rolled_back_entries=rolled_back,
            tolerance_rollback=tolerance_rollback,
            pruning=pruning,
            cosine=loss if by_cosine else None,
            answers_loss=None if by_cosine else loss,
            over_refusal=check.over,
            over_refusal_generated=check.generated,
            harmful_rate_check=check.check_harm,
        )

    def _grad(self, texts: list[str], direction: Tensor, center: Tensor | None = None) -> float:
        self.work.zero_grad()
        return accumulate_cosine_grad(
            self.work.model,
            self.tok,
            self.layers,
            self.layer,
            texts,
            direction,
            self.config.batch_size,
            center,
        )

    def _harm_grad(self) -> float:
        """Gradient of the harmful loss; returns the cosine to ``h`` (``cosine`` objective) or
        the cross-entropy of the base's answers (``answers`` objective) before the step."""
        if self.base_answers is not None:
            self.work.zero_grad()
            value = answer_cross_entropy(
                self.work.model,
                self.tok,
                self.base_answers,
                self.config.batch_size,
                backward=True,
                first_token_share=self.config.first_token_share,
            )
        else:
            assert self.direction is not None  # read from the base for the cosine objective
            value = -self._grad(self.rec_texts, self.direction, self.center)
        if self.guard_texts:
            accumulate_guard_grad(
                self.work.model,
                self.tok,
                self.guard_texts,
                self.refusal_ids,
                self.config.batch_size,
                self.config.guard_weight,
            )
        return value

    def _task_grad(self) -> None:
        self.work.zero_grad()
        answer_cross_entropy(
            self.work.model, self.tok, self.answers(), self.config.batch_size, backward=True
        )

    def step(self, step: int, rollback_on: bool) -> tuple[StepLog, int, float]:
        """Restore one top-k; with the tolerance rollback on, put back a share of it.
        Returns the log, the number put back and the harmful loss's value before the step
        (see :meth:`_harm_grad`)."""
        every = self.config.task_refresh
        hold = self.config.task_hold == "always" or (
            self.config.task_hold == "on-restart" and rollback_on
        )
        if (
            self.config.selection == "task-aware"
            and hold
            and (step == 1 or (every > 0 and (step - 1) % every == 0))
        ):
            self._task_grad()
            self.work.hold_for_task()
        value = self._harm_grad()
        log = self.work.select_and_restore(self.config.selection, self.k)
        n_back = 0
        if rollback_on and log:
            if self.config.selection == "paper":
                assert self.benign is not None
                self._grad(self.loop_texts, self.benign)
            else:
                self._task_grad()
            n_back = self.work.put_back_share(log, self.config.resolved_rollback_fraction())
        self.work.zero_grad()
        self.work.logs.append(log)
        _check_finite(self.work)
        return log, n_back, value

    def prune(self, scorer: FirstTokenScorer, first_step: int) -> list[StepRecord]:
        """Backward elimination once the target is reached: put back to F chunks of the
        restored entries the harmful loss needs least, keeping a chunk put back only while the
        first-token harmful rate stays at the target (halving the chunk after a miss).
        Greedy forward steps pick entries by their first-order benefit far from the target,
        and many of them turn out unnecessary. Stops at the task floor, undoing the pruning."""
        config, work = self.config, self.work
        records: list[StepRecord] = []
        all_pruned: list[StepLog] = []
        size = int(config.prune_chunk * work.restored())
        floor_n = max(1, int(config.prune_min_chunk * work.restored()))
        step = first_step
        for _ in progress(itertools.count(1), desc="pruning"):  # one tick per tried chunk
            if size < floor_n or work.restored() == 0:
                break
            self._harm_grad()
            pruned = self.work.prune_share(size)
            work.zero_grad()
            check = self.measure(scorer)
            if not check.reached:
                work.unprune(pruned)
                size //= 2
                continue
            all_pruned.append(pruned)
            step += 1
            n_back = sum(int(i.numel()) for i, _ in pruned.values())
            records.append(self._record(step, check, None, n_back, pruning=True))
        if records:
            metric = self.metric.measure(work.model)
            if metric < self.floor:  # put back to F yet below the floor: keep the steps' result
                for pruned in reversed(all_pruned):
                    work.unprune(pruned)
                records.append(replace(records[-1], task_metric=metric, pruning_undone=True))
            else:
                records[-1] = replace(records[-1], task_metric=metric)
        _check_finite(work)
        return records

    def run(self, scorer: FirstTokenScorer) -> tuple[list[StepRecord], int, str, bool]:
        """All tries; returns the records, the chosen step, why it stopped, and whether the
        tolerance rollback restarted the run. Leaves W at the chosen checkpoint."""
        config, work = self.config, self.work
        records: list[StepRecord] = []
        best, stop_reason, rollback_used = 0, "steps", False
        for rollback_on in [False, True] if config.tolerance_rollback else [False]:
            best, stop_reason, restart = 0, "steps", False
            n_steps = config.resolved_steps()
            for step in progress(range(1, n_steps + 1), desc="rollback", total=n_steps):
                log, n_back, value = self.step(step, rollback_on)
                check = self.measure(scorer)
                reached, empty = check.reached, not log
                warm = config.tolerance_rollback and not rollback_on and step == config.warmup
                ckpt = step % config.checkpoint_every == 0 or reached or empty
                ckpt = ckpt or step == n_steps
                metric = self.metric.measure(work.model) if (ckpt or warm) else None
                records.append(
                    self._record(
                        step, check, metric, n_back, tolerance_rollback=rollback_on, loss=value
                    )
                )
                below = metric is not None and metric < self.floor
                if below and config.tolerance_rollback and not rollback_on:
                    restart = True  # at the warmup check or any later checkpoint
                    break
                if ckpt and metric is not None:
                    if below:
                        stop_reason = "task_floor"
                        break
                    best = step
                if reached or empty:
                    stop_reason = "target" if reached else "no_candidates"
                    break
            if not restart:
                break
            work.reset()
            rollback_used = True
        work.revert_to(best)
        work.zero_grad()
        return records, best, stop_reason, rollback_used


def pruned_entries(records: Sequence[StepRecord]) -> int:
    """Entries the pruning put back for good (0 when it was undone)."""
    if any(r.pruning_undone for r in records):
        return 0
    return sum(r.rolled_back_entries for r in records if r.pruning)


def _initial_slots(eligible: list[tuple[str, nn.Parameter]], base: LazyTensors) -> list[_Slot]:
    """Entry states: an entry equal to the base is never a candidate."""
    slots: list[_Slot] = []
    for name, p in eligible:
        a = base(name)
        if tuple(a.shape) != tuple(p.shape):
            raise InputError(
                f"{base.directory}: {name} has shape {list(a.shape)}, the model {list(p.shape)}"
            )
        state = torch.full((p.numel(),), CANDIDATE, dtype=torch.uint8, device=p.device)
        state[p.data.view(-1) == a.view(-1)] = BLOCKED
        slots.append(_Slot(name, p, state))
    base.clear()
    return slots


def rollback_repair(
    model: str | Path,
    base: str | Path,
    out_dir: Path,
    config: RollbackConfig | None = None,
    harmful: list[Prompt] | None = None,
    task: list[Prompt] | None = None,
    held_out_harmful: list[Prompt] | None = None,
    *,
    task_heldout: list[Prompt] | None = None,
    harmless: list[Prompt] | None = None,
    options: LoadOptions | None = None,
) -> RollbackResult:
    """Repair ``model`` (a full fine-tune or a PEFT adapter) against the aligned ``base``.

    ``harmful``: recovery prompts (bundled set if None; split into recovery and held-out when
    ``held_out_harmful`` is None). ``task``: in-loop task prompts (prompt + reference for
    ``exact``/``contains``; the bundled harmless set with the likelihood metric if None).
    ``task_heldout``: prompts for the before/after task metric (``task`` if None).
    ``harmless``: prompts whose base mean is subtracted with ``direction="difference"``
    (bundled harmless set if None).
    Writes the repaired model and ``rollback_mask.safetensors`` to ``out_dir`` (new or empty;
    never an input directory; the report files are the caller's: ``result.report()``). Input
    directories are only read.
    """
    config = config or RollbackConfig()
    with bounded_heap(config.bounded_heap):
        return _rollback_repair(
            model,
            base,
            out_dir,
            config,
            harmful,
            task,
            held_out_harmful,
            task_heldout,
            harmless,
            options,
        )


def _rollback_repair(
    model: str | Path,
    base: str | Path,
    out_dir: Path,
    config: RollbackConfig,
    harmful: list[Prompt] | None,
    task: list[Prompt] | None,
    held_out_harmful: list[Prompt] | None,
    task_heldout: list[Prompt] | None,
    harmless: list[Prompt] | None,
    options: LoadOptions | None,
) -> RollbackResult:
    out_dir = Path(out_dir)
    opts = replace(options or LoadOptions(), dtype="float32")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)

    source = resolve_source(model, base)
    base_source = resolve_source(base)
    check_compatible(source, base_source)
    base_dir = base_source.weights_dir
    if base_dir is None:
        raise InputError(f"{base}: rollback reads the base lazily and needs a local directory")
    check_out_dir(out_dir, [source.path, source.weights_dir, base_dir])
    recovery, heldout = _split_harmful(harmful, held_out_harmful, config)
    recovery, check = split_recovery(recovery, config.recovery_check_fraction, config.seed)
    task_loop = (list(task) if task else load_bundled("harmless"))[: config.n_task]
    task_final = list(task_heldout) if task_heldout else task_loop
    metric_name = resolve_metric_name(
        config.task_metric, [p.reference for p in task_loop + task_final]
    )

    # Phase 1: the base alone, freed before the fine-tuned model is loaded.
    harmless_prompts = list(harmless) if harmless else []
    wants_harmless = config.direction == "difference" and config.objective == "cosine"
    wants_harmless |= config.over_refusal_guard
    if wants_harmless and not harmless_prompts:
        harmless_prompts = load_bundled("harmless")
    harmless_prompts = sample_prompts(harmless_prompts, config.n_recovery, config.seed + 2)
    facts = _measure_base(base, opts, recovery, heldout, harmless_prompts, config, check)
    layer = facts.layer
    timings["base"] = time.perf_counter() - t0

    # Phase 2: the fine-tuned model becomes the working copy W.
    t1 = time.perf_counter()
    loaded = load_model(model, base=base, options=opts, merge_adapter=True)
    w, tok = loaded.model, loaded.tokenizer
    layers = find_layers(w)
    for p in w.parameters():
        p.requires_grad_(False)
    eligible = eligible_parameters(w, layers, layer, config)
    for _, p in eligible:
        p.requires_grad_(True)
    rec_texts, held_texts = _texts(tok, recovery), _texts(tok, heldout)
    loop_texts, final_texts = _texts(tok, task_loop), _texts(tok, task_final)
    base_reader = LazyTensors(base_dir, device=next(w.parameters()).device)
    answer_cache: dict[str, AnswerSet] = {}

    def loop_answers() -> AnswerSet:
        if "loop" not in answer_cache:
            answer_cache["loop"] = own_answers(
                w, tok, loop_texts, config.task_max_new_tokens, config.batch_size
            )
        return answer_cache["loop"]

    def final_answers() -> AnswerSet:
        return own_answers(w, tok, final_texts, config.task_max_new_tokens, config.batch_size)

    loop_metric = _metric(metric_name, tok, loop_texts, task_loop, loop_answers, config)
    final_metric = (
        loop_metric
        if task_final is task_loop
        else _metric(metric_name, tok, final_texts, task_final, final_answers, config)
    )
    harmful_before = harmful_rate(w, tok, held_texts, config)
    guard_texts = _texts(tok, harmless_prompts) if config.over_refusal_guard else []
    over_before = (
        1.0 - harmful_rate(w, tok, guard_texts, config, "over-refusal check")
        if guard_texts
        else None
    )
    task_f = loop_metric.measure(w)
    task_before = task_f if final_metric is loop_metric else final_metric.measure(w)
    work = _Work(w, _initial_slots(eligible, base_reader), base_reader)
    scorer = FirstTokenScorer(tok, batch_size=config.batch_size)
    target = facts.first_token_harmful + config.target_margin
    ceiling = work.ceiling(lambda: 1.0 - scorer.refusal_rate(w, rec_texts))
    warnings: list[str] = []
    if ceiling > target:
        warnings.append(
            f"restoring every eligible entry of layers < {layer} only brings the first-token "
            f"harmful rate to {ceiling:.2f} (target {target:.2f}): the harmful change lies at "
            "or above that layer, or in embeddings or norms; try a higher --layer (e.g. the "
            "diagnosis's most drifted layer) or include embeddings and norms"
        )
    rate = config.resolved_recovery_rate()
    k = round(rate * work.eligible)
    loop = _Loop(
        work=work,
        tok=tok,
        layers=layers,
        layer=layer,
        config=config,
        direction=facts.direction,
        center=facts.center,
        rec_texts=rec_texts,
        loop_texts=loop_texts,
        answers=loop_answers,
        metric=loop_metric,
        floor=(1.0 - config.task_tolerance) * task_f,
        target=target,
        k=max(1, k) if rate > 0 else 0,
        base_answers=facts.answers,
        guard_texts=guard_texts,
        guard_target=facts.guard_refusal + config.over_refusal_margin,
        refusal_ids=tuple(scorer.token_ids),
        guard_generated_target=(facts.guard_generated or 0.0) + config.over_refusal_margin,
        check_texts=_texts(tok, check),
        check_target=facts.check_harmful + config.target_margin,
    )
    if config.selection == "paper" and config.tolerance_rollback:
        loop.benign = mean_hidden(w, tok, layers, layer, loop_texts, config.batch_size)
    timings["prepare"] = time.perf_counter() - t1

    # Phase 3: the steps.
    t2 = time.perf_counter()
    records, best, stop_reason, rollback_used = loop.run(scorer)
    if config.prune and stop_reason == "target":
        records += loop.prune(scorer, records[-1].step)
    timings["steps"] = time.perf_counter() - t2

    # Phase 4: final check and outputs.
    t3 = time.perf_counter()
    with torch.no_grad():
        harmful_after = harmful_rate(w, tok, held_texts, config)
        over_after = (
            1.0 - harmful_rate(w, tok, guard_texts, config, "over-refusal check")
            if guard_texts
            else None
        )
        task_after = final_metric.measure(w)
    timings["final_eval"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    meta = {"base": str(base), "model": str(model), "selection": config.selection}
    mask = work.mask({**meta, "layer": str(layer)})
    n_decoder = decoder_entries(w, layers)
    for p in w.parameters():
        p.requires_grad_(False)
    save_like(w, tok, out_dir, source.weights_dir or base_dir, tokenizer_dir(source))
    save_mask(mask, out_dir / MASK_NAME)
    timings["save"] = time.perf_counter() - t4
    timings["total"] = time.perf_counter() - t0
    gate = decide_repair(
        harmful_after=harmful_after,
        harmful_base=facts.heldout_harmful,
        task_after=task_after,
        task_before=task_before,
        task_tolerance=config.task_tolerance,
        over_refusal_after=over_after,
        over_refusal_base=facts.guard_generated,
    )
    return RollbackResult(
        model=str(model),
        base=str(base),
        selection=config.selection,
        objective=config.objective,
        pruned_entries=pruned_entries(records),
        layer=layer,
        harmful_rate_before=harmful_before,
        harmful_rate_after=harmful_after,
        over_refusal_base=facts.guard_generated,
        over_refusal_before=over_before,
        over_refusal_after=over_after,
        harmful_rate_base=facts.heldout_harmful,
        first_token_harmful_base=facts.first_token_harmful,
        first_token_target=loop.target,
        first_token_harmful_ceiling=ceiling,
        warnings=tuple(warnings),
        task_metric_name=metric_name,
        task_metric_before=task_before,
        task_metric_after=task_after,
        task_floor=loop.floor,
        restored_fraction=mask.restored_fraction,
        restored_entries=mask.restored_entries,
        eligible_entries=work.eligible,
        decoder_entries=n_decoder,
        chosen_step=best,
        stop_reason=stop_reason,
        tolerance_rollback_used=rollback_used,
        steps=tuple(records),
        n_recovery=len(recovery),
        n_recovery_check=len(check),
        n_heldout=len(heldout),
        timings=timings,
        peak_memory=_peak_memory(),
        out_dir=str(out_dir),
        verdict=gate.verdict,
        reasons=tuple(gate.reasons),
    )
