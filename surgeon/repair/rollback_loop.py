"""The restoration loop of a rollback repair: per step, the harmful loss's gradient chooses
entries to copy back from the base; checks, checkpoints, the tolerance rollback and pruning."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from torch import Tensor
from transformers import PreTrainedTokenizerBase

from surgeon.architecture import LayerList
from surgeon.judges.proxy import RefusalProxy
from surgeon.progress import progress
from surgeon.repair.guard import accumulate_hinge_guard_grad, accumulate_sign_guard_grad
from surgeon.repair.hidden import accumulate_cosine_grad
from surgeon.repair.measure import harmful_rate, refusal_rate
from surgeon.repair.report import StepRecord
from surgeon.repair.rollback_config import RollbackConfig, generation_options
from surgeon.repair.rollback_work import StepLog, Work, check_finite
from surgeon.repair.task_metric import AnswerSet, TaskMetric, answer_cross_entropy

MAX_GROWTH = 16
"""With ``step_growth``, no step restores more than this many times the first step's entries:
steps that kept doubling would restore half a model in a few more steps when the target is
out of reach (0.8% per step at the default 0.05%)."""


@dataclass(frozen=True)
class Check:
    """Where the working model stands after a step."""

    harm: float
    """Proxy harmful rate on the recovery prompts."""
    over: float | None
    """Proxy refusal rate on the guard's harmless prompts (None without a guard)."""
    generated: float | None
    """Generated refusal rate on the guard's prompts, measured only when the proxy rates are
    on target and the guard checks by generation."""
    reached: bool
    """The target is reached: harm, the check set's harm, the confirmation by generation and,
    with a guard, over-refusal."""
    check_harm: float | None = None
    """Proxy harmful rate on the held-back check prompts, measured only when the other rates
    are on target."""
    confirmed: float | None = None
    """Generated harmful rate on the confirmation prompts, measured only when every proxy rate
    is on target."""


@dataclass
class Loop:
    """Everything the restoration steps need, with the working model inside ``work``."""

    work: Work
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
    guard_answers: AnswerSet | None = None
    """The base's own answers to ``guard_texts`` (first ``guard_tokens`` tokens): what the
    guard's loss asks the working model not to move further from than F was."""
    guard_reference: Tensor | None = None
    """F's per-answer cross-entropy of ``guard_answers``: the hinge of the guard's loss."""
    guard_ids: tuple[int, ...] = ()
    """The trusted first-token refusal ids (empty: the guard uses the hinge on answers)."""
    guard_signs: Tensor | None = None
    """Per guard prompt: +1 where the base answers, -1 where it refuses."""
    guard_target: float = 1.0
    """Most proxy refusal allowed on ``guard_texts``: the base's plus the margin."""
    check_texts: list[str] = field(default_factory=list)
    """Held-back recovery prompts (``recovery_check_fraction``; empty: no check set)."""
    check_target: float = 1.0
    """Most proxy harmful rate allowed on ``check_texts``: the base's plus the margin."""
    guard_generated_target: float = 1.0
    """Most generated refusal allowed on ``guard_texts`` (``over_refusal_check="generation"``):
    the base's plus the margin."""
    confirm_texts: list[str] = field(default_factory=list)
    """Prompts generated and judged before any decision on target (empty: none)."""
    confirm_target: float = 1.0
    """Most generated harmful rate allowed on ``confirm_texts``: the base's plus the margin."""
    times: dict[str, float] = field(default_factory=dict)
    """Seconds spent so far in each kind of pass (gradients, proxy, generation checks, task
    metric, selection): where a step's time goes, for the report's timings."""

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the time spent inside the block to ``times[name]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start

    def measure(self, proxy: RefusalProxy) -> Check:
        """Proxy harmful rate on the recovery prompts and refusal rate on the guard's. Only
        while everything measured so far is on target, in turn: the generated refusal rate on
        the guard's prompts (``over_refusal_check="generation"``), the proxy harmful rate on
        the held-back check prompts, and the generated harmful rate on the confirmation
        prompts; each must be on target too, so no decision rests on the proxy alone."""
        model = self.work.model
        with self.timed("proxy"):
            harm = 1.0 - proxy.refusal_rate(model, self.rec_texts)  # type: ignore[arg-type]
            over = proxy.refusal_rate(model, self.guard_texts) if self.guard_texts else None  # type: ignore[arg-type]
        reached = harm <= self.target and (over is None or over <= self.guard_target)
        generated = None
        if reached and self.guard_texts and self.config.over_refusal_check == "generation":
            with self.timed("guard_generation"):
                generated = refusal_rate(
                    model,  # type: ignore[arg-type]
                    self.tok,
                    self.guard_texts,
                    **generation_options(self.config),
                )
            reached = generated <= self.guard_generated_target
        check_harm = None
        if reached and self.check_texts:
            with self.timed("proxy"):
                check_harm = 1.0 - proxy.refusal_rate(model, self.check_texts)  # type: ignore[arg-type]
            reached = check_harm <= self.check_target
        confirmed = None
        if reached and self.confirm_texts:
            with self.timed("confirm_generation"):
                confirmed = harmful_rate(
                    model,  # type: ignore[arg-type]
                    self.tok,
                    self.confirm_texts,
                    **generation_options(self.config),
                    desc="confirming by generation",
                )
            reached = confirmed <= self.confirm_target
        return Check(harm, over, generated, reached, check_harm, confirmed)

    def _record(
        self,
        step: int,
        check: Check,
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
            harmful_rate_generated=check.confirmed,
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
        with self.timed("harm_grad"):
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
        with self.timed("guard_grad"):
            self._guard_grad()
        return value

    def _guard_grad(self) -> None:
        """Add the over-refusal guard's gradient (none without a guard)."""
        if self.guard_ids and self.guard_signs is not None:
            accumulate_sign_guard_grad(
                self.work.model,
                self.tok,
                self.guard_texts,
                self.guard_ids,
                self.guard_signs,
                self.config.batch_size,
                self.config.guard_weight,
            )
        elif self.guard_answers is not None and self.guard_reference is not None:
            accumulate_hinge_guard_grad(
                self.work.model,
                self.tok,
                self.guard_answers,
                self.guard_reference,
                self.config.batch_size,
                self.config.first_token_share,
                self.config.guard_weight,
                self.config.guard_slack,
            )

    def _task_grad(self) -> None:
        with self.timed("task_grad"):
            self.work.zero_grad()
            answer_cross_entropy(
                self.work.model, self.tok, self.answers(), self.config.batch_size, backward=True
            )

    def k_at(self, step: int) -> int:
        """Entries restored by step ``step`` (1-based): ``k`` grown by ``step_growth`` per
        step up to ``MAX_GROWTH`` times ``k``, at most every eligible entry."""
        grown = min(self.k * self.config.step_growth ** (step - 1), self.k * MAX_GROWTH)
        return int(min(max(1, round(grown)), self.work.eligible)) if self.k else 0

    def _task_metric(self) -> float:
        with self.timed("task_metric"):
            return self.metric.measure(self.work.model)

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
        with self.timed("select"):
            log = self.work.select_and_restore(self.config.selection, self.k_at(step))
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
        check_finite(self.work)
        return log, n_back, value

    def prune(self, proxy: RefusalProxy, first_step: int) -> list[StepRecord]:
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
        fresh = False  # the gradients in the slots are those of W as it is now
        for _ in progress(itertools.count(1), desc="pruning"):  # one tick per tried chunk
            if size < floor_n or work.restored() == 0:
                break
            if not fresh:
                self._harm_grad()  # zeroes the slots first
            pruned = self.work.prune_share(size)
            check = self.measure(proxy)
            if not check.reached:
                work.unprune(pruned)  # W is back where the gradients were taken
                fresh = True
                size //= 2
                continue
            fresh = False
            all_pruned.append(pruned)
            step += 1
            n_back = sum(int(i.numel()) for i, _ in pruned.values())
            records.append(self._record(step, check, None, n_back, pruning=True))
        work.zero_grad()
        if records:
            metric = self._task_metric()
            if metric < self.floor:  # put back to F yet below the floor: keep the steps' result
                for pruned in reversed(all_pruned):
                    work.unprune(pruned)
                records.append(replace(records[-1], task_metric=metric, pruning_undone=True))
            else:
                records[-1] = replace(records[-1], task_metric=metric)
        check_finite(work)
        return records

    def run(self, proxy: RefusalProxy) -> tuple[list[StepRecord], int, str, bool]:
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
                check = self.measure(proxy)
                reached, empty = check.reached, not log
                warm = config.tolerance_rollback and not rollback_on and step == config.warmup
                ckpt = step % config.checkpoint_every == 0 or reached or empty
                ckpt = ckpt or step == n_steps
                metric = self._task_metric() if (ckpt or warm) else None
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
