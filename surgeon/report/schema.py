"""The report schema: one typed model per report kind owns its keys, their types and their order.

``DiagnoseReport`` is what ``surgeon diagnose`` writes, ``RollbackReport`` what ``surgeon repair
--method rollback`` writes (the repair schema is the union over methods, told apart by
``method``). report.json is the model dumped in field order; report.md, report.html, the plots
and the terminal summary read the same typed object. The JSON Schemas generated from these
models ship in ``surgeon/report/schemas/`` and ``surgeon schema diagnose|repair`` prints them;
``python tools/make_schemas.py`` rewrites them after a change (a test checks they are current).
Bump :data:`SCHEMA_VERSION` on any change of a key or a type.

Measured floats that can be undefined (a cosine of a zero vector, a rate of nothing) are
``float | None``: NaN and infinities become ``null``, never invalid JSON.
"""

from __future__ import annotations

import json
import math
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = "3.2"
"""The one version of both report schemas; bumped on any change of keys or types."""


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


Num = Annotated[float | None, BeforeValidator(_finite)]
"""A measured number; ``None`` where it is undefined (NaN, infinite, not measured)."""
Share = Annotated[float, Field(ge=0.0, le=1.0)]
"""A rate or share in [0, 1]."""
OptShare = Annotated[float | None, Field(ge=0.0, le=1.0), BeforeValidator(_finite)]
"""A share that may be missing (no base, not measured)."""
Interval = tuple[Share, Share]
"""A 95% confidence interval ``[low, high]``."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# ---------------------------------------------------------------------------------------------
# diagnose


class CategoryRate(_Model):
    """The harmful rate of one prompt category."""

    model: Share
    """The model's harmful rate in this category."""
    base: OptShare = None
    """The base's (None without a base)."""
    n: int
    """Prompts in the category."""
    ci: Interval
    """95% Wilson interval of the model's rate."""


class Behaviour(_Model):
    """What the model does: harmful compliance and over-refusal, with the base's figures."""

    harmful_rate: Share
    """Share of harmful prompts answered harmfully (greedy generation, judged)."""
    harmful_rate_ci: Interval
    """95% Wilson interval of ``harmful_rate``."""
    harmful_rate_base: OptShare = None
    """The base's harmful rate on the same prompts."""
    over_refusal_rate: OptShare
    """Share of benign-but-scary prompts refused (None without such prompts)."""
    over_refusal_rate_base: OptShare = None
    """The base's over-refusal rate."""
    n_harmful: int
    """Harmful prompts judged."""
    n_harmless: int
    """Benign-but-scary prompts judged."""
    judge: str
    """The judge that decided (``keyword`` or a judge model's path)."""
    by_category: dict[str, CategoryRate]
    """The harmful rate per prompt category."""


class DirectionLayer(_Model):
    """The refusal direction after one decoder layer."""

    layer: int
    """0-based decoder layer (its output, ``blocks.N.hook_resid_post``)."""
    refusal_norm: Num
    """Norm of the model's difference-of-means refusal direction."""
    refusal_norm_base: Num = None
    """Norm of the base's."""
    cos_to_base: Num = None
    """Cosine between the two directions."""
    separation: Num
    """Harmful-minus-harmless projection on the unit base direction, in harmless spreads."""
    separation_base: Num = None
    """The same in the base."""


class DirectionCausal(_Model):
    """The causal check of the selected (or best) layer's direction (Arditi et al.)."""

    layer: int
    """The layer whose direction was tested."""
    ablation_in: Literal["base", "model"]
    """Which model the direction was ablated in."""
    ablation_refusal_rate_before: Share
    """Refusal rate (first-token proxy) on harmful prompts, unablated."""
    ablation_refusal_rate_after: Share
    """The same with the direction projected out everywhere."""
    ablation_logodds_before: Num
    """Mean refusal log-odds on harmful prompts, unablated."""
    ablation_logodds_after: Num
    """The same, ablated."""
    ablation_kl: Num
    """Mean first-token KL on harmless prompts caused by the ablation."""
    kl_bound: float
    """The largest KL a valid direction may cause."""
    kl_ok: bool
    """``ablation_kl <= kl_bound``."""
    valid: bool
    """KL within bound, refusal dropped when ablated and rose when added."""
    addition_in: Literal["base", "model"]
    """Which model the direction was added to (the one it was ablated in)."""
    addition_refusal_rate_before: Share
    """Refusal rate on harmless prompts, without the addition."""
    addition_refusal_rate_after: Share
    """The same with the direction added at its layer."""
    addition_logodds_before: Num
    """Mean refusal log-odds on harmless prompts, without the addition."""
    addition_logodds_after: Num
    """The same, with it."""
    score: Num
    """Log-odds drop under ablation plus rise under addition."""
    model_addition_refusal_rate_before: OptShare = None
    """With a base: the fine-tune's refusal rate on harmless prompts, unchanged."""
    model_addition_refusal_rate_after: OptShare = None
    """The same with the base's direction added to the fine-tune at this layer."""
    model_addition_logodds_before: Num = None
    """Its mean refusal log-odds without the addition."""
    model_addition_logodds_after: Num = None
    """The same with it (does the fine-tune still respond to the direction?)."""


class Directions(_Model):
    """Refusal directions per layer and which layer carries refusal."""

    layers: list[DirectionLayer]
    """One entry per decoder layer."""
    selected_layer: int | None
    """The causally selected layer (None when no candidate passed)."""
    most_drifted_layer: int | None
    """Where the fine-tune lost most separation (None without a base)."""
    causal: DirectionCausal | None
    """The selected layer's causal check (or the best invalid one); None when skipped."""
    refusal_score: Literal["first-token", "phrase"] = "first-token"
    """How the causal check read refusal: ``phrase`` when a refusal first token also started
    the models' own non-refusing answers and was scored by its whole phrases instead."""
    ambiguous_tokens: list[str] = Field(default_factory=list)
    """Those ambiguous refusal first tokens."""


class ModuleChange(_Model):
    """How one weight matrix moved."""

    name: str
    """Hugging Face tensor name."""
    layer: int | None
    """0-based decoder layer (None outside the layers)."""
    rel_delta: Num
    """``||W - W_base|| / ||W_base||``."""
    module_type: str
    """The module's own name (``q_proj``...)."""
    changed_share: Share
    """Share of its entries that changed."""
    topk_energy: OptShare = None
    """Share of the delta's energy in its top singular directions."""


class Weights(_Model):
    """Weight forensics against the base."""

    modules: list[ModuleChange]
    """Every compared matrix, in checkpoint order."""
    changed_fraction: Share
    """Share of all parameters that changed."""
    most_changed_layers: list[int]
    """Layers with the largest mean relative change."""


class FocalHead(_Model):
    """One attention head's focal score."""

    layer: int
    """0-based decoder layer."""
    head: int
    """Query head index."""
    score: Num
    """The rule's score (higher: more focal)."""


class HeadDrift(_Model):
    """How one head's focal score moved from the base to the model."""

    layer: int
    """0-based decoder layer."""
    head: int
    """Query head index."""
    score: Num
    """The model's score."""
    score_base: Num
    """The base's score."""
    delta: Num
    """``score - score_base``."""
    mass_delta: Num = None
    """Change of the system-span attention mass on conflicts (model minus base)."""


class FocalCausal(_Model):
    """Mean-ablating the focal heads against as many random heads."""

    metric: str
    """What was measured (``violation_rate``: conflicts broken, by generation)."""
    model: Literal["base", "model"]
    """Which model the heads were ablated in (the base when there is one)."""
    baseline: Num
    """The metric with nothing ablated."""
    focal: Num
    """Change of the metric with the focal heads ablated."""
    random_mean: Num
    """Mean change with random heads ablated."""
    random_std: Num
    """Standard deviation of the random changes."""
    draws: int
    """Random draws."""
    heads: int
    """Heads ablated per set."""
    valid: bool
    """``|focal| > |random_mean| + 2 random_std`` and more than one item's resolution."""


class Focal(_Model):
    """Focal attention heads: where the model resolves system-vs-user conflicts."""

    rule: str
    """``conflict_mass`` (system-span mass on conflicts), ``mass`` (FocalLoRA's separation
    rule) or ``row`` (FocalLoRA's whole-row divergence)."""
    heads: list[FocalHead]
    """The model's focal heads, best first."""
    layers: list[int]
    """The layers holding them."""
    base_heads: list[FocalHead] = Field(default_factory=list)
    """The base's focal heads."""
    base_layers: list[int] = Field(default_factory=list)
    """The layers holding them."""
    n_pairs: int
    """Normal/conflicting prompt pairs measured."""
    scores: list[list[Num]]
    """The model's score of every head, ``[layer][head]``."""
    scores_base: list[list[Num]] | None = None
    """The base's."""
    drift: list[HeadDrift] = Field(default_factory=list)
    """The heads whose score moved most from the base."""
    drift_scores: list[list[Num]] | None = None
    """Score change of every head (model minus base), ``[layer][head]``."""
    drift_mass: list[list[Num]] | None = None
    """Change of every head's system-span mass on conflicts, ``[layer][head]``."""
    causal: FocalCausal | None = None
    """The ablation check (None when skipped)."""


class CrasDimensions(_Model):
    """CRAS per dimension, 1 to 5."""

    goal_alignment: Num
    """Did the answer serve the legitimate part of the request."""
    role_consistency: Num
    """Did it keep its persona and format."""
    knowledge_boundary: Num
    """Did it stay within its topic limits."""
    constraint_compliance: Num
    """Did it obey the system constraint."""


class CrasWorst(_Model):
    """One of the lowest-scoring queries."""

    category: str
    """The item's category (its constraint type for the bundled set)."""
    system: str
    """The system instruction."""
    prompt: str
    """The conflicting user message."""
    response: str
    """The model's answer."""
    score: Num
    """Its mean CRAS."""
    violated: bool
    """The answer broke the constraint."""


class Cras(_Model):
    """Contextualized Role Adherence Score on system-vs-user conflicts."""

    mean: Num
    """Mean over conflict queries and dimensions (1 to 5)."""
    mean_ci: tuple[Num, Num]
    """95% t interval of ``mean``."""
    dimensions: CrasDimensions
    """Per-dimension means."""
    dimensions_ci: dict[str, tuple[Num, Num]]
    """95% t intervals of the per-dimension means."""
    violation_rate: Share
    """Share of conflicts whose answer broke the constraint."""
    violation_rate_ci: Interval
    """95% Wilson interval of ``violation_rate``."""
    violation_rate_normal: OptShare = None
    """The same on the non-conflicting messages."""
    violation_rate_base: OptShare = None
    """The base's violation rate on the conflicts."""
    mean_base: Num = None
    """The base's mean CRAS."""
    dimensions_base: CrasDimensions | None = None
    """The base's per-dimension means."""
    violation_by_category: dict[str, Share] = Field(default_factory=dict)
    """Violation rate per item category."""
    n: int
    """Queries scored."""
    judge: str
    """``rules`` or a judge model."""
    worst: list[CrasWorst] = Field(default_factory=list)
    """The lowest-scoring queries."""


class DiagnoseReport(_Model):
    """report.json of ``surgeon diagnose``."""

    schema_version: Literal[SCHEMA_VERSION] = SCHEMA_VERSION
    """The schema version (first key)."""
    kind: Literal["diagnose"] = "diagnose"
    """The report kind."""
    model: str
    """The model as given."""
    base: str | None
    """The base as given (an adapter's recorded base when none was), or None."""
    behaviour: Behaviour
    """Harmful compliance and over-refusal."""
    directions: Directions
    """Refusal directions per layer."""
    weights: Weights | None
    """Weight forensics (None without a local base)."""
    focal: Focal | None
    """Focal heads (None when not measured)."""
    cras: Cras | None
    """Role adherence (None when not measured)."""
    verdict: Literal["pass", "fail"]
    """The release gate."""
    reasons: list[str]
    """One sentence per check, failed checks first."""
    warnings: list[str] = Field(default_factory=list)
    """Things the user should know (truncated prompts...)."""
    truncated_prompts: int = 0
    """Prompts cut from the left to fit the model's context."""
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds per stage."""


# ---------------------------------------------------------------------------------------------
# repair


class RollbackStep(_Model):
    """One restoration (or pruning) step of a rollback repair."""

    step: int
    """1-based step number within its try."""
    harmful_rate: Share
    """Harmful rate on the recovery prompts after the step, by the refusal proxy."""
    task_metric: Num = None
    """Task metric after the step, when measured."""
    restored_fraction: Share
    """Restored over eligible entries after the step."""
    restored_entries: int
    """Restored entries after the step."""
    rolled_back_entries: int
    """Entries of this step put back (tolerance rollback or pruning)."""
    tolerance_rollback: bool
    """A step of the try restarted with the tolerance rollback."""
    pruning: bool
    """A pruning step (put back after the target was reached)."""
    pruning_undone: bool
    """The record added when pruning was undone at the task floor."""
    cosine: Num = None
    """Cosine to the base's harmful state before the step (``cosine`` objective)."""
    answers_loss: Num = None
    """Loss on the base's answers before the step (``answers`` objective)."""
    over_refusal: OptShare = None
    """Refusal rate on the guard prompts after the step, by the refusal proxy."""
    over_refusal_generated: OptShare = None
    """Refusal rate on the guard prompts by generation, when measured."""
    harmful_rate_check: OptShare = None
    """Proxy harmful rate on the held-back check prompts, when measured."""
    harmful_rate_generated: OptShare = None
    """Harmful rate on the confirmation prompts by generation, measured whenever the proxy
    said the target was reached (a stop or a kept put-back needs it on target too)."""


class ProxyCandidate(_Model):
    """How one refusal proxy agreed with the generation judge before the loop."""

    name: str
    """``first-token`` or ``generation``."""
    rate_base: Share
    """Its harmful rate on the base's recovery prompts."""
    judge_base: Share
    """The generation judge's."""
    agreement_base: Share
    """Share of those prompts where the two agree."""
    rate_model: Share
    """Its harmful rate on the model's recovery prompts."""
    judge_model: Share
    """The generation judge's."""
    agreement_model: Share
    """Share of those prompts where the two agree."""
    trusted: bool
    """Both rates within the tolerance of the judge's."""


class ProxyReport(_Model):
    """The refusal proxy the loop used, chosen by calibration against generation."""

    name: str
    """The proxy used."""
    agreement_base: Share
    """Its per-prompt agreement with the judge on the base."""
    agreement_model: Share
    """The same on the model."""
    tolerance: float
    """Largest rate difference a trusted proxy may show."""
    excluded_tokens: list[str]
    """Refusal tokens dropped from the first-token proxy (they also start helpful answers)."""
    tokens: int
    """Tokens the generation proxy reads."""
    candidates: list[ProxyCandidate]
    """Every proxy measured."""


class RepairReport(_Model):
    """What every repair report holds, whatever the method."""

    schema_version: Literal[SCHEMA_VERSION] = SCHEMA_VERSION
    """The schema version (first key)."""
    kind: Literal["repair"] = "repair"
    """The report kind."""
    model: str
    """The model repaired, as given."""
    base: str | None
    """The aligned base, as given."""
    harmful_rate_before: Share
    """Held-out harmful rate of the model (generated, keyword judge)."""
    harmful_rate_after: Share
    """The same after the repair."""
    harmful_rate_base: OptShare = None
    """The same for the base."""
    over_refusal_base: OptShare = None
    """Refusal rate of the base on the guard's harmless prompts (generated)."""
    over_refusal_before: OptShare = None
    """The same for the model."""
    over_refusal_after: OptShare = None
    """The same after the repair."""
    task_metric_name: str
    """``exact``, ``contains`` or ``likelihood``."""
    task_metric_before: Num
    """Task metric of the model."""
    task_metric_after: Num
    """Task metric after the repair."""
    verdict: Literal["pass", "fail"]
    """The repair's gate."""
    reasons: list[str]
    """One sentence per check, failed checks first."""
    warnings: list[str] = Field(default_factory=list)
    """Things the user should know."""
    truncated_prompts: int = 0
    """Prompts cut from the left to fit the model's context."""
    out_dir: str
    """Where the repaired model was written."""
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds per phase."""
    peak_memory: dict[str, int] = Field(default_factory=dict)
    """High-water marks in bytes (``rss``; ``cuda`` on a GPU)."""


class RollbackReport(RepairReport):
    """report.json of ``surgeon repair --method rollback``."""

    method: Literal["rollback"] = "rollback"
    """The repair method."""
    restored_fraction: Share
    """Restored entries over eligible entries."""
    restored_fraction_decoder: float
    """Restored entries over all decoder-layer entries (embeddings counted: may exceed 1)."""
    restored_entries: int
    """Entries copied from the base."""
    eligible_entries: int
    """Entries that could be restored."""
    decoder_entries: int
    """All decoder-layer entries."""
    pruned_entries: int
    """Restorations put back by the pruning."""
    selection: Literal["task-aware", "paper"]
    """The selection rule."""
    space: Literal["entries", "adapter"] = "entries"
    """Where entries were chosen and restored: ``entries`` of the model's weights (an adapter
    merged first; the output a full model) or ``adapter``, a LoRA adapter's own tensors (a
    factor's entry set to 0, a saved module copy's to the original's; the output an adapter)."""
    objective: Literal["answers", "cosine"]
    """The harmful loss whose gradient chose entries."""
    grad_dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision the ranking gradients were accumulated in (``grad_dtype``, resolved)."""
    layer: int
    """Layer L: entries of layers ``0..L-1`` were eligible."""
    n_task_items: int = 0
    """Task prompts behind ``task_metric_before``/``_after``."""
    task_metric_before_ci: Interval | None = None
    """95% Wilson interval of ``task_metric_before`` (``exact``/``contains``; None for
    ``likelihood``)."""
    task_metric_after_ci: Interval | None = None
    """The same for ``task_metric_after``."""
    proxy: ProxyReport
    """The refusal proxy of the loop and its calibration."""
    proxy_harmful_base: Share
    """The base's harmful rate on the recovery prompts, by the proxy."""
    proxy_target: float
    """The loop's early-stop target (proxy)."""
    proxy_harmful_ceiling: Share
    """The proxy harmful rate with every eligible entry restored."""
    confirm_target: float
    """The target of the confirmation by generation (the base's rate plus the margin)."""
    n_confirm: int
    """Prompts the confirmation generates."""
    task_floor: Num
    """In-loop task floor."""
    chosen_step: int
    """Step of the checkpoint kept (0: unchanged)."""
    stop_reason: Literal["target", "task_floor", "steps", "no_candidates"]
    """Why the loop stopped."""
    tolerance_rollback_used: bool
    """Whether the tolerance rollback restarted the run."""
    n_recovery: int
    """Recovery prompts in the gradients."""
    n_recovery_check: int
    """Recovery prompts held back as the loop's check set."""
    n_heldout: int
    """Held-out harmful prompts of the final check."""
    mask: str
    """The rollback mask file, relative to the output directory."""
    steps: list[RollbackStep]
    """Every step run, in order."""


class SailStep(_Model):
    """One optimizer step of a SAIL repair."""

    step: int
    """1-based step."""
    loss: Num
    """Mean token-weighted DPO loss of the step's pairs."""
    margin: Num
    """Mean reward margin (chosen minus rejected) of the step's pairs."""
    accuracy: Share
    """Share of the step's pairs whose chosen reward is above the rejected one."""
    lr: float
    """Learning rate of the step."""
    violation_rate: OptShare = None
    """Violation rate of the check split after the step, when measured (``conflict``)."""
    harmful_rate: OptShare = None
    """Harmful rate of the check split after the step, when measured (``harmful``)."""


class SailPairs(_Model):
    """Where the preference pairs came from and how many of each kind."""

    source: Literal["file", "built"]
    """``file`` (``--preferences``) or ``built`` from the training prompts."""
    file: str | None
    """The preference file, when given."""
    n_prompts: int
    """Training prompts the pairs were built from (0 for a file)."""
    chosen_from_base: int
    """Pairs whose chosen response is the base's own answer."""
    chosen_from_model: int
    """Guard pairs whose chosen response is the model's own answer."""
    chosen_built: int
    """Pairs whose chosen response the project wrote (constraint-satisfying, or a refusal)."""
    guard_pairs: int
    """Pairs on harmless prompts, chosen = an answer, rejected = the refusal (``harmful``)."""
    skipped_already_good: int
    """Training prompts the model already answered well (obeyed, or refused)."""
    skipped_no_chosen: int
    """Training prompts without an acceptable chosen response."""
    dropped_too_long: int
    """Pairs dropped because prompt and response exceed the model's context."""


class SailReport(RepairReport):
    """report.json of ``surgeon repair --method sail``."""

    method: Literal["sail"] = "sail"
    """The repair method."""
    target: Literal["conflict", "harmful"]
    """What the preferences repair: system-over-user conflicts, or refusal of harmful requests."""
    weighting: Literal["attention", "uniform", "reference"]
    """Per-token weights of the DPO objective."""
    beta: float
    """DPO's beta."""
    focal_layers: list[int]
    """Decoder layers (0-based) that got LoRA."""
    focal_heads: list[FocalHead]
    """The focal heads whose attention weights the tokens (every head of given layers)."""
    focal_source: Literal["probe", "given"]
    """Whether the focal probe found the layers or the user gave them."""
    target_modules: list[str]
    """The modules that got LoRA (q/k/v/o of the focal layers)."""
    lora_r: int
    """LoRA rank."""
    lora_alpha: int
    """LoRA alpha."""
    trainable_params: int
    """Trainable (LoRA) parameter entries."""
    model_params: int
    """Parameter entries of the model without the adapter."""
    n_pairs: int
    """Preference pairs trained on."""
    pairs: SailPairs
    """Where the pairs came from."""
    n_check: int
    """Training prompts held back from the pairs as the early-stop check split."""
    n_heldout_conflicts: int
    """Held-out conflicts of the before/after measurement (never in training)."""
    n_heldout_harmful: int
    """Held-out harmful prompts of the before/after harmful rate."""
    n_harmless: int
    """Harmless prompts of the before/after over-refusal."""
    violation_rate_before: Share
    """Held-out conflict violation rate of the model (generated, checkers)."""
    violation_rate_after: Share
    """The same after the repair."""
    violation_rate_base: OptShare = None
    """The same for the base."""
    cras_before: Num
    """Mean CRAS (1-5, rule judge) on the held-out conflicts, before."""
    cras_after: Num
    """The same after the repair."""
    cras_base: Num = None
    """The same for the base."""
    cras_dimensions_before: CrasDimensions
    """CRAS per dimension, before."""
    cras_dimensions_after: CrasDimensions
    """CRAS per dimension, after."""
    cras_dimensions_base: CrasDimensions | None = None
    """CRAS per dimension of the base."""
    check_rate_base: OptShare = None
    """The base's rate on the check split (violations, or harm for ``harmful``)."""
    check_target: float
    """The early stop's target on the check split (the base's rate plus the margin)."""
    stop_reason: Literal["target", "steps", "no_steps"]
    """Why the loop stopped."""
    steps_run: int
    """Optimizer steps taken."""
    processes: int
    """Data-parallel processes that trained."""
    adapter: str
    """The PEFT adapter directory, relative to the output directory."""
    merged: str | None = None
    """The merged model directory, relative to the output directory (with ``--merge``)."""
    steps: list[SailStep]
    """Every step, in order."""


REPAIR_REPORTS: tuple[type[RepairReport], ...] = (RollbackReport, SailReport)
"""Every repair method's report model."""

AnyRepairReport = Annotated[RollbackReport | SailReport, Field(discriminator="method")]
"""The repair schema: the union over :data:`REPAIR_REPORTS`, told apart by ``method``."""

Report = DiagnoseReport | RollbackReport | SailReport
"""Any report."""

KINDS: dict[str, Any] = {"diagnose": DiagnoseReport, "repair": AnyRepairReport}
"""Report kind -> its model (or union)."""


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a report kind, generated from its model."""
    if kind not in KINDS:
        raise KeyError(f"unknown report kind {kind!r}; choose from {', '.join(KINDS)}")
    schema = TypeAdapter(KINDS[kind]).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://surgeon.dev/schemas/{kind}-{SCHEMA_VERSION}.json"
    return schema


def schema_text(kind: str) -> str:
    """The JSON Schema of ``kind`` as the shipped file's text."""
    return json.dumps(json_schema(kind), indent=2, sort_keys=False) + "\n"


def shipped_schema_path(kind: str) -> Path:
    """The JSON Schema file shipped in the package."""
    return Path(str(resources.files("surgeon.report").joinpath(f"schemas/{kind}.schema.json")))


def parse_report(data: dict[str, Any]) -> Report:
    """The typed report of a report.json object (by its ``kind``)."""
    kind = data.get("kind")
    if kind not in KINDS:
        raise ValueError(f"not a surgeon report kind: {kind!r}")
    return TypeAdapter(KINDS[kind]).validate_python(data)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the shipped schemas (``--check``: only compare, exit 1 when stale)."""
    args = sys.argv[1:] if argv is None else argv
    stale = []
    for kind in KINDS:
        path = shipped_schema_path(kind)
        text = schema_text(kind)
        if "--check" in args:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"{path}: written")
    if stale:
        print("stale (run python tools/make_schemas.py): " + ", ".join(stale))
        return 1
    return 0
