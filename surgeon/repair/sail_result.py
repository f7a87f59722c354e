"""The outcome of a SAIL repair, and its typed ``report.json`` (surgeon/report/schema.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from surgeon.repair.sail_eval import Measures
from surgeon.repair.sail_lora import Placement
from surgeon.repair.sail_train import StepRecord
from surgeon.report import schema

ADAPTER_DIR = "adapter"
"""The adapter's directory inside the output directory."""
MERGED_DIR = "merged"
"""The merged model's directory inside the output directory (``--merge``)."""


@dataclass(frozen=True)
class PairCounts:
    """Where the preference pairs came from."""

    source: str
    """``file`` or ``built``."""
    file: str | None
    """The preference file, when given."""
    n_prompts: int = 0
    """Training prompts the pairs were built from."""
    chosen_from_base: int = 0
    """Pairs whose chosen response is the base's answer."""
    chosen_from_model: int = 0
    """Guard pairs whose chosen response is the model's own answer."""
    chosen_built: int = 0
    """Pairs whose chosen response the project wrote."""
    guard_pairs: int = 0
    """Pairs on harmless prompts that keep the model answering (``harmful``)."""
    skipped_already_good: int = 0
    """Prompts the model already answered well."""
    skipped_no_chosen: int = 0
    """Prompts without an acceptable chosen response."""
    dropped_too_long: int = 0
    """Pairs longer than the model's context."""


@dataclass(frozen=True)
class SailResult:
    """What a SAIL repair did and measured."""

    model: str
    """The model repaired, as given."""
    base: str | None
    """The aligned base, as given."""
    target: str
    """``conflict`` or ``harmful``."""
    weighting: str
    """``attention``, ``uniform`` or ``reference``."""
    beta: float
    """DPO's beta."""
    placement: Placement
    """Focal layers and heads, LoRA targets."""
    lora_r: int
    """LoRA rank."""
    lora_alpha: int
    """LoRA alpha."""
    trainable_params: int
    """LoRA parameter entries."""
    model_params: int
    """Parameter entries of the model without the adapter."""
    n_pairs: int
    """Pairs trained on."""
    pairs: PairCounts
    """Where they came from."""
    n_check: int
    """Check-split prompts."""
    n_heldout_conflicts: int
    """Held-out conflicts."""
    n_heldout_harmful: int
    """Held-out harmful prompts."""
    n_harmless: int
    """Harmless prompts."""
    before: Measures
    """The model before the repair."""
    after: Measures
    """The repaired model."""
    base_measures: Measures | None
    """The base (None without one)."""
    task_metric_name: str
    """``exact``, ``contains`` or ``none``."""
    check_rate_base: float | None
    """The base's check-split rate."""
    check_target: float
    """The early stop's target."""
    stop_reason: str
    """``target``, ``steps`` or ``no_steps``."""
    steps: tuple[StepRecord, ...]
    """Every step."""
    processes: int
    """Data-parallel processes."""
    verdict: str
    """The gate: ``pass`` or ``fail``."""
    reasons: tuple[str, ...]
    """One sentence per check."""
    merged: bool = False
    """Whether ``merged/`` was written."""
    out_dir: str = ""
    """Where the outputs were written."""
    warnings: tuple[str, ...] = ()
    """Things the user should know."""
    truncated_prompts: int = 0
    """Prompts cut from the left to fit the model's context."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase."""
    peak_memory: dict[str, int] = field(default_factory=dict)
    """High-water marks in bytes."""

    def report(self, out_dir: str | None = None) -> schema.SailReport:
        """The typed report.json (``out_dir``: where the outputs end up)."""
        b, a, base = self.before, self.after, self.base_measures
        rate_key = "violation_rate" if self.target == "conflict" else "harmful_rate"
        return schema.SailReport(
            model=self.model,
            base=self.base,
            harmful_rate_before=b.harmful_rate,
            harmful_rate_after=a.harmful_rate,
            harmful_rate_base=None if base is None else base.harmful_rate,
            over_refusal_base=None if base is None else base.over_refusal,
            over_refusal_before=b.over_refusal,
            over_refusal_after=a.over_refusal,
            task_metric_name=self.task_metric_name,
            task_metric_before=b.task,
            task_metric_after=a.task,
            verdict=self.verdict,  # type: ignore[arg-type]
            reasons=list(self.reasons),
            warnings=list(self.warnings),
            truncated_prompts=self.truncated_prompts,
            out_dir=out_dir or self.out_dir,
            timings={k: round(v, 3) for k, v in self.timings.items()},
            peak_memory=dict(self.peak_memory),
            target=self.target,  # type: ignore[arg-type]
            weighting=self.weighting,  # type: ignore[arg-type]
            beta=self.beta,
            focal_layers=list(self.placement.layers),
            focal_heads=[
                schema.FocalHead(layer=h.layer, head=h.head, score=h.score)
                for h in self.placement.heads
            ],
            focal_source=self.placement.source,  # type: ignore[arg-type]
            target_modules=list(self.placement.target_modules),
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            trainable_params=self.trainable_params,
            model_params=self.model_params,
            n_pairs=self.n_pairs,
            pairs=schema.SailPairs(**self.pairs.__dict__),
            n_check=self.n_check,
            n_heldout_conflicts=self.n_heldout_conflicts,
            n_heldout_harmful=self.n_heldout_harmful,
            n_harmless=self.n_harmless,
            violation_rate_before=b.violation_rate,
            violation_rate_after=a.violation_rate,
            violation_rate_base=None if base is None else base.violation_rate,
            cras_before=b.cras,
            cras_after=a.cras,
            cras_base=None if base is None else base.cras,
            cras_dimensions_before=schema.CrasDimensions(**b.cras_dimensions),
            cras_dimensions_after=schema.CrasDimensions(**a.cras_dimensions),
            cras_dimensions_base=None
            if base is None
            else schema.CrasDimensions(**base.cras_dimensions),
            check_rate_base=self.check_rate_base,
            check_target=self.check_target,
            stop_reason=self.stop_reason,  # type: ignore[arg-type]
            steps_run=len(self.steps),
            processes=self.processes,
            adapter=ADAPTER_DIR,
            merged=MERGED_DIR if self.merged else None,
            steps=[
                schema.SailStep(
                    step=s.step,
                    loss=s.loss,
                    margin=s.margin,
                    accuracy=s.accuracy,
                    lr=s.lr,
                    **{rate_key: s.check_rate},
                )
                for s in self.steps
            ],
        )
