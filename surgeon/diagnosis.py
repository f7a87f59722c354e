"""``diagnose()``: behaviour, refusal directions and weight deltas of a fine-tune, and a verdict.

Each model is loaded once (an adapter merged into its base) and freed before the next, so at
most one model is in memory; the base's refusal directions are carried over as tensors. The
result's :meth:`DiagnoseResult.report` is the typed report.json (surgeon/report/schema.py).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from probes.behaviour import BehaviourResult, measure_behaviour
from probes.conflict_probe import ConflictProbeResult, probe_conflicts
from probes.conflict_probe import cras_judge as conflict_judge
from probes.cras import CrasJudge
from probes.directions import (
    AblationEffect,
    AdditionEffect,
    ClassActivations,
    DirectionsResult,
    ablation_effects,
    addition_effects,
    build_result,
    candidate_layers,
    causal_subset,
    class_activations,
    format_texts,
    score_for,
    shown_layer,
)
from probes.focal import FocalResult, attention_drift
from probes.refusal_score import RefusalScore
from probes.weights import WeightsConfig, WeightsResult, compare_weights
from surgeon.conflicts import ConflictItem, bundled_conflicts, diagnose_conflicts
from surgeon.diagnose_config import DiagnoseConfig
from surgeon.judges import Judge
from surgeon.loading import LoadedModel, check_compatible, load_model, resolve_source
from surgeon.prompts import Prompt, prompts_or_bundled
from surgeon.repair.prompt_sets import sample_prompts
from surgeon.report import schema
from surgeon.tokens import track_truncation
from surgeon.verdict import decide


@dataclass(frozen=True)
class DiagnoseResult:
    """Everything ``diagnose`` measured (:meth:`report` is its report.json)."""

    model: str
    """The model reference as given."""
    base: str | None
    """The base reference (an adapter's recorded base when none was given), or None."""
    behaviour: BehaviourResult
    """The fine-tune's behaviour, responses included."""
    behaviour_base: BehaviourResult | None
    """The base's behaviour on the same prompts."""
    conflict: ConflictProbeResult
    """The model on the system-vs-user conflicts: focal heads, CRAS, causal check."""
    conflict_base: ConflictProbeResult | None
    """The base on the same conflicts."""
    directions: DirectionsResult
    """Refusal directions per layer and the causally selected layer."""
    weights: WeightsResult | None
    """Weight deltas against the base (None without a local base)."""
    verdict: str
    """``pass`` or ``fail``."""
    reasons: tuple[str, ...]
    """Why, one sentence per check."""
    timings: dict[str, float]
    """Seconds spent per stage."""
    truncated_prompts: int = 0
    """Prompts cut from the left to fit the model's context."""
    warnings: tuple[str, ...] = ()
    """Things the user should know."""

    def report(self) -> schema.DiagnoseReport:
        """The typed report.json."""
        return schema.DiagnoseReport(
            model=self.model,
            base=self.base,
            behaviour=_behaviour(self.behaviour, self.behaviour_base),
            directions=_directions(self.directions),
            weights=_weights(self.weights) if self.weights is not None else None,
            focal=_focal(self.conflict, self.conflict_base),
            cras=_cras(self.conflict, self.conflict_base),
            verdict=self.verdict,  # type: ignore[arg-type]
            reasons=list(self.reasons),
            warnings=list(self.warnings),
            truncated_prompts=self.truncated_prompts,
            timings={k: round(v, 3) for k, v in self.timings.items()},
        )


def _behaviour(b: BehaviourResult, base: BehaviourResult | None) -> schema.Behaviour:
    cats = {
        cat: schema.CategoryRate(
            model=r.rate,
            base=base.by_category[cat].rate if base and cat in base.by_category else None,
            n=r.n,
            ci=r.ci,
        )
        for cat, r in b.by_category.items()
    }
    over = b.over_refusal.n > 0
    return schema.Behaviour(
        harmful_rate=b.harmful.rate,
        harmful_rate_ci=b.harmful.ci,
        harmful_rate_base=base.harmful.rate if base else None,
        over_refusal_rate=b.over_refusal.rate if over else None,
        over_refusal_rate_base=base.over_refusal.rate if base and over else None,
        n_harmful=b.harmful.n,
        n_harmless=b.over_refusal.n,
        judge=b.judge,
        by_category=cats,
    )


def _grid(scores: Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in scores]


def _heads(result: FocalResult) -> list[schema.FocalHead]:
    return [schema.FocalHead(layer=h.layer, head=h.head, score=h.score) for h in result.heads]


def _focal(run: ConflictProbeResult, base: ConflictProbeResult | None) -> schema.Focal | None:
    if run.focal is None:
        return None
    focal, base_focal = run.focal, base.focal if base is not None else None
    drift = attention_drift(base_focal, focal) if base_focal is not None else None
    check = base.causal if base is not None else run.causal
    return schema.Focal(
        rule=focal.rule,
        heads=_heads(focal),
        layers=list(focal.layers),
        base_heads=_heads(base_focal) if base_focal else [],
        base_layers=list(base_focal.layers) if base_focal else [],
        n_pairs=focal.n_pairs,
        scores=_grid(focal.scores),
        scores_base=_grid(base_focal.scores) if base_focal else None,
        drift=[
            schema.HeadDrift(
                layer=d.layer,
                head=d.head,
                score=d.score,
                score_base=d.score_base,
                delta=d.delta,
                mass_delta=d.conflict_mass_delta,
            )
            for d in drift.moved_most
        ]
        if drift
        else [],
        drift_scores=_grid(drift.score_delta) if drift else None,
        drift_mass=_grid(drift.conflict_mass_delta) if drift else None,
        causal=None
        if check is None
        else schema.FocalCausal(
            metric=check.metric,
            model="base" if base is not None else "model",
            baseline=check.baseline,
            focal=check.focal,
            random_mean=check.random_mean,
            random_std=check.random_std,
            draws=check.draws,
            heads=len(check.heads),
            valid=check.valid,
        ),
    )


def _dimensions(values: dict[str, float]) -> schema.CrasDimensions:
    return schema.CrasDimensions(**values)


def _cras(run: ConflictProbeResult, base: ConflictProbeResult | None) -> schema.Cras:
    c, b = run.cras, base.cras if base is not None else None
    return schema.Cras(
        mean=c.mean,
        mean_ci=c.mean_ci,
        dimensions=_dimensions(c.dimensions),
        dimensions_ci=dict(c.dimensions_ci),
        violation_rate=c.violation.rate,
        violation_rate_ci=c.violation.ci,
        violation_rate_normal=c.violation_normal.rate if c.violation_normal else None,
        violation_rate_base=b.violation.rate if b else None,
        mean_base=b.mean if b else None,
        dimensions_base=_dimensions(b.dimensions) if b else None,
        violation_by_category=dict(c.violation_by_category),
        n=c.n,
        judge=c.judge,
        worst=[
            schema.CrasWorst(
                category=w.category,
                system=w.system,
                prompt=w.message,
                response=w.response,
                score=w.scores.mean,
                violated=w.violated,
            )
            for w in c.worst
        ],
    )


def _causal(d: DirectionsResult) -> schema.DirectionCausal | None:
    if d.causal is None:
        return None
    ab, ad, md = d.causal.ablation, d.causal.addition, d.causal.model_addition
    return schema.DirectionCausal(
        layer=d.causal.layer,
        ablation_in="base" if d.refusal_base is not None else "model",
        ablation_refusal_rate_before=ab.rate_before,
        ablation_refusal_rate_after=ab.rate_after,
        ablation_logodds_before=ab.logodds_before,
        ablation_logodds_after=ab.logodds_after,
        ablation_kl=ab.kl,
        kl_bound=d.kl_bound,
        kl_ok=d.causal.kl_ok,
        valid=d.causal.valid,
        addition_in="base" if d.refusal_base is not None else "model",
        addition_refusal_rate_before=ad.rate_before,
        addition_refusal_rate_after=ad.rate_after,
        addition_logodds_before=ad.logodds_before,
        addition_logodds_after=ad.logodds_after,
        score=d.causal.score,
        model_addition_refusal_rate_before=md.rate_before if md else None,
        model_addition_refusal_rate_after=md.rate_after if md else None,
        model_addition_logodds_before=md.logodds_before if md else None,
        model_addition_logodds_after=md.logodds_after if md else None,
    )


def _directions(d: DirectionsResult) -> schema.Directions:
    return schema.Directions(
        layers=[
            schema.DirectionLayer(
                layer=s.layer,
                refusal_norm=s.refusal_norm,
                refusal_norm_base=s.refusal_norm_base,
                cos_to_base=s.cos_to_base,
                separation=s.separation,
                separation_base=s.separation_base,
            )
            for s in d.layers
        ],
        selected_layer=d.selected_layer,
        most_drifted_layer=d.most_drifted_layer,
        causal=_causal(d),
        refusal_score=d.refusal_score,
        ambiguous_tokens=list(d.ambiguous_tokens),
    )


def _weights(w: WeightsResult) -> schema.Weights:
    return schema.Weights(
        modules=[
            schema.ModuleChange(
                name=m.name,
                layer=m.layer,
                rel_delta=m.rel_delta,
                module_type=m.module_type,
                changed_share=m.changed_fraction,
                topk_energy=m.top_k_energy,
            )
            for m in w.modules
        ],
        changed_fraction=w.changed_fraction,
        most_changed_layers=list(w.most_changed_layers),
    )


@dataclass(frozen=True)
class _Prompts:
    harmful: list[Prompt]
    harmless: list[Prompt]
    over_refusal: list[Prompt]
    conflicts: list[ConflictItem]


@dataclass(frozen=True)
class _Run:
    """What one loaded model contributed."""

    acts: ClassActivations
    behaviour: BehaviourResult
    ablations: list[AblationEffect]
    additions: list[AdditionEffect]
    conflict: ConflictProbeResult
    score: RefusalScore
    """How its causal check read refusal."""


def _free(loaded: LoadedModel) -> None:
    """Drop the model's weights now rather than at the next collection."""
    del loaded.model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_model(
    loaded: LoadedModel,
    prompts: _Prompts,
    config: DiagnoseConfig,
    judge: Judge,
    timings: dict[str, float],
    stage: str,
    *,
    directions: Tensor | None,
    ablate: bool,
    add_at: Sequence[int] | None,
    focal_causal: bool,
    cras_judge: CrasJudge,
) -> _Run:
    """Probe one loaded model. ``directions`` None: use this model's own refusal directions.
    ``add_at``: the layers the addition check runs at (None: every candidate).
    ``focal_causal``: also check this model's focal heads by ablation."""
    model, tok = loaded.model, loaded.tokenizer
    dcfg = config.directions_config()
    t0 = time.perf_counter()
    acts = class_activations(model, tok, prompts.harmful, prompts.harmless, dcfg)
    timings[f"{stage}_activations_s"] = time.perf_counter() - t0
    dirs = directions if directions is not None else acts.refusal
    cands = candidate_layers(acts.harmful.shape[0], dcfg.exclude_last, dcfg.causal_layers)
    h_texts = format_texts(tok, causal_subset(prompts.harmful, dcfg.n_causal))
    l_texts = format_texts(tok, causal_subset(prompts.harmless, dcfg.n_causal))
    t0 = time.perf_counter()
    behaviour = measure_behaviour(
        model, tok, prompts.harmful, prompts.over_refusal, judge, config.behaviour_config()
    )
    timings[f"{stage}_behaviour_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    score = score_for(
        model,
        tok,
        [*behaviour.harmful_prompts, *behaviour.over_refusal_prompts],
        dcfg,
        [*behaviour.harmful_responses, *behaviour.over_refusal_responses],
    )
    ablations, additions = [], []
    if dcfg.n_causal > 0 and ablate:
        ablations = ablation_effects(
            model, tok, dirs, cands, h_texts, l_texts, dcfg.batch_size, score
        )
    add_cands = cands if add_at is None else list(add_at)
    if dcfg.n_causal > 0 and add_cands:
        additions = addition_effects(model, tok, dirs, add_cands, l_texts, dcfg.batch_size, score)
    timings[f"{stage}_causal_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    conflict = probe_conflicts(
        model,
        tok,
        prompts.conflicts,
        config.conflict_config(),
        causal=focal_causal,
        judge=cras_judge,
    )
    timings[f"{stage}_conflicts_s"] = time.perf_counter() - t0
    return _Run(acts, behaviour, ablations, additions, conflict, score)


def _load(
    ref: str, base: str | None, config: DiagnoseConfig, timings: dict[str, float], stage: str
) -> LoadedModel:
    t0 = time.perf_counter()
    loaded = load_model(ref, base, config.load)
    timings[f"{stage}_load_s"] = time.perf_counter() - t0
    return loaded


def diagnose(
    model: str | Path,
    base: str | Path | None = None,
    config: DiagnoseConfig | None = None,
) -> DiagnoseResult:
    """Diagnose ``model`` against ``base`` (or alone): behaviour, directions, weights, verdict.

    An adapter given without a base is compared with the base its config records. Prompts
    longer than the model's context are cut from the left and counted in the result.
    Raises :class:`InputError` on bad paths, prompt files or mismatched checkpoints.
    """
    with track_truncation() as cut:
        result = _diagnose(model, base, config or DiagnoseConfig())
    return replace(result, truncated_prompts=cut.count, warnings=tuple(cut.warnings()))


def _diagnose(model: str | Path, base: str | Path | None, config: DiagnoseConfig) -> DiagnoseResult:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    model_ref = str(model)
    gguf_file = config.load.gguf_file
    source = resolve_source(model_ref, base, gguf_file)
    if base is None and source.kind == "adapter" and source.base is not None:
        base = source.base.ref
    base_ref = str(base) if base is not None else None
    base_source = resolve_source(base_ref, gguf_file=gguf_file) if base_ref is not None else None
    if base_source is not None:
        check_compatible(source, base_source)
    harmful, harmless, over_refusal = (
        sample_prompts(prompts_or_bundled(path, name), config.max_prompts, config.seed)
        for path, name in (
            (config.harmful, "harmful"),
            (config.harmless, "harmless"),
            (config.over_refusal, "over_refusal"),
        )
    )
    items = diagnose_conflicts(config.conflicts) if config.conflicts else bundled_conflicts()
    conflicts = sample_prompts(items, config.max_conflicts, config.seed)  # type: ignore[arg-type]
    prompts = _Prompts(harmful, harmless, over_refusal, conflicts)  # type: ignore[arg-type]
    judge = config.make_judge()
    cras_judge = conflict_judge(config.cras_judge, config.load.resolved_device())

    base_run: _Run | None = None
    if base_ref is not None:
        loaded = _load(base_ref, None, config, timings, "base")
        base_run = _run_model(
            loaded,
            prompts,
            config,
            judge,
            timings,
            "base",
            directions=None,
            ablate=True,
            add_at=None,
            focal_causal=True,
            cras_judge=cras_judge,
        )
        _free(loaded)
    # with a base, the fine-tune's addition is measured at the layer the report shows only
    add_at = None
    if base_run is not None:
        shown = shown_layer(
            base_run.ablations, base_run.additions, config.directions_config().kl_bound
        )
        add_at = () if shown is None else (shown,)
    loaded = _load(model_ref, base_ref, config, timings, "model")
    run = _run_model(
        loaded,
        prompts,
        config,
        judge,
        timings,
        "model",
        directions=base_run.acts.refusal if base_run else None,
        ablate=base_run is None,
        add_at=add_at,
        focal_causal=base_run is None,
        cras_judge=cras_judge,
    )
    _free(loaded)

    selecting = base_run or run
    directions = build_result(
        run.acts,
        base_run.acts if base_run else None,
        selecting.ablations,
        selecting.additions,
        config.directions_config(),
        [r.score for r in (base_run, run) if r is not None],
        run.additions if base_run else (),
    )
    weights = None
    if (
        base_source is not None
        and config.compare_weights
        and source.weights_dir is not None
        and base_source.weights_dir is not None
    ):
        t0 = time.perf_counter()
        weights = compare_weights(model_ref, base_ref, WeightsConfig(), gguf_file)  # type: ignore[arg-type]
        timings["weights_s"] = time.perf_counter() - t0
    behaviour_base = base_run.behaviour if base_run else None
    conflict_base = base_run.conflict if base_run else None
    violation = None
    if conflict_base is not None:
        violation = (run.conflict.cras.violation_rate, conflict_base.cras.violation_rate)
    verdict = decide(run.behaviour, behaviour_base, config.fail_on, violation)
    timings["total_s"] = time.perf_counter() - t_start
    return DiagnoseResult(
        model=model_ref,
        base=base_ref,
        behaviour=run.behaviour,
        behaviour_base=behaviour_base,
        conflict=run.conflict,
        conflict_base=conflict_base,
        directions=directions,
        weights=weights,
        verdict=verdict.verdict,
        reasons=tuple(verdict.reasons),
        timings=timings,
    )
