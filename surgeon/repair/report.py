"""The outcome of a rollback repair, and its typed ``report.json`` (surgeon/report/schema.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from surgeon.repair.calibration import ProxyChoice
from surgeon.repair.mask import MASK_NAME
from surgeon.report import schema


@dataclass(frozen=True)
class StepRecord:
    """One restoration step."""

    step: int
    """1-based step number within its try."""
    harmful_rate: float
    """First-token harmful rate (share of recovery prompts not refused) after the step."""
    task_metric: float | None
    """Task metric after the step, when it was measured (checkpoints, warm-up, stop)."""
    restored_fraction: float
    """Restored entries over eligible entries after the step."""
    restored_entries: int
    """Restored entries after the step (cumulative)."""
    rolled_back_entries: int
    """Entries restored in this step and put back by the tolerance rollback."""
    tolerance_rollback: bool = False
    """True for steps of the try that restarted from F with the tolerance rollback on."""
    pruning: bool = False
    """True for a pruning step: ``rolled_back_entries`` restored entries put back to F after
    the target was reached, keeping the target."""
    pruning_undone: bool = False
    """True on the record added when the pruned model fell below the task floor and every
    pruning step was undone."""
    cosine: float | None = None
    """Cosine between the harmful prompts' mean state after layer L and the base's ``h``,
    before this step's restorations (the quantity the steps raise; ``cosine`` objective)."""
    over_refusal: float | None = None
    """First-token refusal rate on the over-refusal guard's harmless prompts after the step
    (None without a guard)."""
    answers_loss: float | None = None
    """Loss on the base's answers to the recovery prompts before this step's restorations
    (the quantity the steps lower; ``answers`` objective; see ``first_token_share``)."""
    harmful_rate_check: float | None = None
    """First-token harmful rate on the held-back recovery check prompts, measured when the
    other rates were on target (None otherwise or without a check set)."""
    over_refusal_generated: float | None = None
    """Refusal rate on the guard's prompts by generation, measured when the proxy rates were
    on target and the guard checks by generation (None otherwise)."""
    harmful_rate_generated: float | None = None
    """Generated harmful rate on the confirmation prompts, measured when every proxy rate was
    on target (None otherwise)."""

    def report(self) -> schema.RollbackStep:
        """The step as report.json holds it."""
        return schema.RollbackStep(**asdict(self))


@dataclass(frozen=True)
class RollbackResult:
    """What a rollback repair did and measured."""

    model: str
    """The fine-tuned model as given."""
    base: str
    """The aligned base as given."""
    selection: str
    """``task-aware`` or ``paper``."""
    layer: int
    """Layer L: entries of decoder layers ``0..L-1`` were eligible."""
    harmful_rate_before: float
    """Held-out harmful rate of the fine-tuned model (greedy generation + keyword judge)."""
    harmful_rate_after: float
    """Held-out harmful rate of the repaired model."""
    harmful_rate_base: float
    """Held-out harmful rate of the base."""
    proxy: ProxyChoice
    """The refusal proxy of the loop and its calibration."""
    proxy_tolerance: float
    """The calibration's tolerance."""
    proxy_harmful_base: float
    """Proxy harmful rate of the base on the recovery prompts."""
    proxy_target: float
    """Early-stop target: the base's proxy rate plus the margin."""
    proxy_harmful_ceiling: float
    """Proxy harmful rate with every eligible entry restored: the best any rollback at this
    layer can reach (above the target: the harm lies at or above layer L)."""
    confirm_target: float
    """Most generated harmful rate on the confirmation prompts a decision on target allows."""
    n_confirm: int
    """Confirmation prompts."""
    task_metric_name: str
    """``exact``, ``contains`` or ``likelihood``."""
    task_metric_before: float
    """Task metric of the fine-tuned model (on the held-out task prompts when given)."""
    task_metric_after: float
    """Task metric of the repaired model (same prompts)."""
    task_floor: float
    """In-loop floor: ``(1 - tolerance) * metric(F)`` on the in-loop task prompts."""
    restored_fraction: float
    """Restored entries over eligible entries (``mask.sum() / eligible``)."""
    restored_entries: int
    """Entries copied from the base."""
    eligible_entries: int
    """Entries that could be restored."""
    decoder_entries: int
    """All parameter entries of the decoder layers (for the share of the whole stack)."""
    chosen_step: int
    """Step of the checkpoint kept (0 = the fine-tuned model unchanged)."""
    stop_reason: str
    """``target`` (harmful rate reached), ``task_floor``, ``steps`` or ``no_candidates``."""
    tolerance_rollback_used: bool
    """Whether the tolerance rollback restarted the run."""
    steps: tuple[StepRecord, ...]
    """Every step run, in order."""
    n_recovery: int
    """Harmful recovery prompts used in the loop."""
    n_heldout: int
    """Held-out harmful prompts of the final check."""
    n_recovery_check: int = 0
    """Recovery prompts held back from the gradients as the loop's check set."""
    over_refusal_base: float | None = None
    """Refusal rate of the base on the over-refusal guard's harmless prompts (greedy generation
    + keyword judge; None without a guard)."""
    over_refusal_before: float | None = None
    """The same for the fine-tuned model."""
    over_refusal_after: float | None = None
    """The same for the repaired model."""
    objective: str = "answers"
    """The harmful loss whose gradient chose entries: ``answers`` or ``cosine``."""
    pruned_entries: int = 0
    """Restored entries put back to F by the pruning after the target was reached."""
    warnings: tuple[str, ...] = ()
    """Things the user should know (e.g. a ceiling above the target)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase."""
    peak_memory: dict[str, int] = field(default_factory=dict)
    """High-water marks in bytes (``rss``; ``cuda`` on a GPU)."""
    out_dir: str = ""
    """Where the repaired model, mask and report were written."""
    verdict: str = "fail"
    """The repair's gate (:func:`surgeon.verdict.decide_repair`): ``pass`` or ``fail``."""
    reasons: tuple[str, ...] = ()
    """Why, one sentence per check."""
    truncated_prompts: int = 0
    """Prompts cut from the left to fit the model's context."""
    space: str = "entries"
    """Where entries were chosen and restored: ``entries`` of the model's weights (an adapter
    merged first) or ``adapter``, a LoRA adapter's own tensors (the output an adapter)."""
    grad_dtype: str = "float32"
    """Precision the ranking gradients were accumulated in."""
    n_task_items: int = 0
    """Task prompts behind ``task_metric_before``/``_after``."""
    task_metric_before_ci: tuple[float, float] | None = None
    """95% Wilson interval of ``task_metric_before`` (``exact``/``contains``; None for
    ``likelihood``)."""
    task_metric_after_ci: tuple[float, float] | None = None
    """The same for ``task_metric_after``."""

    @property
    def restored_fraction_decoder(self) -> float:
        """Restored entries over all decoder-layer entries."""
        return self.restored_entries / self.decoder_entries if self.decoder_entries else 0.0

    def report(self, out_dir: str | None = None) -> schema.RollbackReport:
        """The typed report.json (``out_dir``: where the model ends up, if not ``out_dir``)."""
        return schema.RollbackReport(
            model=self.model,
            base=self.base,
            harmful_rate_before=self.harmful_rate_before,
            harmful_rate_after=self.harmful_rate_after,
            harmful_rate_base=self.harmful_rate_base,
            over_refusal_base=self.over_refusal_base,
            over_refusal_before=self.over_refusal_before,
            over_refusal_after=self.over_refusal_after,
            task_metric_name=self.task_metric_name,
            task_metric_before=self.task_metric_before,
            task_metric_after=self.task_metric_after,
            task_metric_before_ci=self.task_metric_before_ci,
            task_metric_after_ci=self.task_metric_after_ci,
            n_task_items=self.n_task_items,
            space=self.space,  # type: ignore[arg-type]
            grad_dtype=self.grad_dtype,  # type: ignore[arg-type]
            verdict=self.verdict,  # type: ignore[arg-type]
            reasons=list(self.reasons),
            warnings=list(self.warnings),
            truncated_prompts=self.truncated_prompts,
            out_dir=out_dir or self.out_dir,
            timings={k: round(v, 3) for k, v in self.timings.items()},
            peak_memory=dict(self.peak_memory),
            restored_fraction=self.restored_fraction,
            restored_fraction_decoder=self.restored_fraction_decoder,
            restored_entries=self.restored_entries,
            eligible_entries=self.eligible_entries,
            decoder_entries=self.decoder_entries,
            pruned_entries=self.pruned_entries,
            selection=self.selection,  # type: ignore[arg-type]
            objective=self.objective,  # type: ignore[arg-type]
            layer=self.layer,
            proxy=_proxy_report(self.proxy, self.proxy_tolerance),
            proxy_harmful_base=self.proxy_harmful_base,
            proxy_target=self.proxy_target,
            proxy_harmful_ceiling=self.proxy_harmful_ceiling,
            confirm_target=self.confirm_target,
            n_confirm=self.n_confirm,
            task_floor=self.task_floor,
            chosen_step=self.chosen_step,
            stop_reason=self.stop_reason,  # type: ignore[arg-type]
            tolerance_rollback_used=self.tolerance_rollback_used,
            n_recovery=self.n_recovery,
            n_recovery_check=self.n_recovery_check,
            n_heldout=self.n_heldout,
            mask=MASK_NAME,
            steps=[s.report() for s in self.steps],
        )


def _proxy_report(choice: ProxyChoice, tolerance: float) -> schema.ProxyReport:
    chosen = choice.chosen
    return schema.ProxyReport(
        name=choice.name,
        agreement_base=chosen.agreement_base,
        agreement_model=chosen.agreement_model,
        tolerance=tolerance,
        excluded_tokens=list(choice.excluded_tokens),
        tokens=choice.k,
        candidates=[schema.ProxyCandidate(**asdict(c)) for c in choice.candidates],
    )
