"""What a report shows, independent of how it is drawn (markdown, HTML, terminal).

Every function here reads the typed report (:mod:`surgeon.report.schema`); values that were not
measured (no base, no CRAS run) are ``None`` and render as ``n/a``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from surgeon.report.schema import (
    DiagnoseReport,
    RepairReport,
    Report,
    RollbackReport,
    SailReport,
)

NA = "n/a"
TOP_MODULES = 10


@dataclass(frozen=True)
class Row:
    """One row of a table: a label and its cells, already formatted as text."""

    label: str
    """What the row measures (first column)."""
    cells: tuple[str, ...]
    """The formatted values, one per remaining column."""


@dataclass(frozen=True)
class Table:
    """A small table: a title, column headers and rows of text."""

    title: str
    """Heading shown above the table."""
    headers: tuple[str, ...]
    """Column headers, the first one naming the row labels."""
    rows: tuple[Row, ...]
    """The rows, in display order."""
    marked: tuple[int, ...] = ()
    """Indices of rows to highlight (selected or most drifted layer)."""
    left: tuple[int, ...] = (0,)
    """Indices of the text columns (aligned left; the others hold numbers, aligned right)."""


def number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, NaN, infinite, not a number)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt_rate(value: Any) -> str:
    """A rate in [0, 1] as a percentage with one decimal, e.g. ``"12.5%"``."""
    x = number(value)
    return NA if x is None else f"{100 * x:.1f}%"


def fmt_num(value: Any) -> str:
    """A float with 3 decimals below 10, 2 below 100, 1 below 1e5, else (and below 1e-3)
    in scientific notation; integers stay integers."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    x = number(value)
    if x is None:
        return NA
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.2e}"
    decimals = 3 if abs(x) < 10 else 2 if abs(x) < 100 else 1
    return f"{x:.{decimals}f}"


def fmt_value(value: Any) -> str:
    """Any JSON value as short text: numbers formatted, lists joined, ``None`` as ``n/a``."""
    if value is None:
        return NA
    if isinstance(value, (int, float)):
        return fmt_num(value)
    if isinstance(value, str):
        return value or NA
    if isinstance(value, Sequence):
        return ", ".join(fmt_value(v) for v in value) if value else NA
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in value.items()) if value else NA
    return str(value)


def fmt_ci(ci: Any) -> str:
    """A confidence interval ``[lo, hi]`` as ``"[lo%, hi%]"``, or ``n/a``."""
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return NA
    lo, hi = (number(v) for v in ci)
    if lo is None or hi is None:
        return NA
    return f"[{100 * lo:.1f}%, {100 * hi:.1f}%]"


def fmt_layers(value: Any) -> str:
    """A layer index or a list of them as text."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(str(v) for v in value) if value else NA
    return NA if value is None else str(value)


def title(report: Report) -> str:
    """The report's heading, e.g. ``"surgeon diagnose: org/model"``."""
    if isinstance(report, RepairReport):
        return f"surgeon repair ({report.method}): {report.model}"
    return f"surgeon diagnose: {report.model}"


def summary_table(report: Report) -> Table:
    """The headline numbers: model vs base (diagnose) or before vs after (repair)."""
    if isinstance(report, RepairReport):
        return _repair_summary(report)
    b = report.behaviour
    w, d = report.weights, report.directions
    rows = [
        Row("Harmful compliance rate", (fmt_rate(b.harmful_rate), fmt_rate(b.harmful_rate_base))),
        Row("Harmful rate 95% CI", (fmt_ci(b.harmful_rate_ci), "")),
        Row(
            "Over-refusal rate",
            (fmt_rate(b.over_refusal_rate), fmt_rate(b.over_refusal_rate_base)),
        ),
        Row("Harmful prompts", (fmt_num(b.n_harmful), "")),
        Row("Harmless prompts", (fmt_num(b.n_harmless), "")),
        Row("Selected layer", (fmt_layers(d.selected_layer), "")),
        Row(
            "Refusal read by",
            (
                d.refusal_score
                + (f" ({', '.join(d.ambiguous_tokens)} ambiguous)" if d.ambiguous_tokens else ""),
                "",
            ),
        ),
        Row("Most drifted layer", (fmt_layers(d.most_drifted_layer), "")),
        Row("Changed weight fraction", (fmt_rate(w.changed_fraction if w else None), "")),
        Row("Most changed layers", (fmt_layers(w.most_changed_layers if w else None), "")),
        Row("Focal layers", (fmt_layers(report.focal.layers if report.focal else None), "")),
    ]
    if report.cras is not None:
        c = report.cras
        rows += [
            Row("CRAS (mean, 1-5)", (fmt_num(c.mean), fmt_num(c.mean_base))),
            Row(
                "Conflict violation rate",
                (fmt_rate(c.violation_rate), fmt_rate(c.violation_rate_base)),
            ),
        ]
    else:
        rows.append(Row("CRAS (mean, 1-5)", (NA, NA)))
    return Table("Summary", ("Metric", "Model", "Base"), tuple(rows))


def _repair_summary(report: RepairReport) -> Table:
    rows = [
        Row(
            "Harmful compliance rate",
            (fmt_rate(report.harmful_rate_before), fmt_rate(report.harmful_rate_after)),
        ),
        Row(
            "Task metric", (fmt_rate(report.task_metric_before), fmt_rate(report.task_metric_after))
        ),
    ]
    if report.over_refusal_before is not None or report.over_refusal_after is not None:
        rows.append(
            Row(
                "Over-refusal (guard prompts)",
                (fmt_rate(report.over_refusal_before), fmt_rate(report.over_refusal_after)),
            )
        )
    if isinstance(report, RollbackReport):
        rows += [
            Row("Restored fraction", ("", fmt_rate(report.restored_fraction))),
            Row(
                "Restored / decoder-layer weights", ("", fmt_rate(report.restored_fraction_decoder))
            ),
        ]
    if isinstance(report, SailReport):
        rows += _sail_rows(report)
    return Table("Summary", ("Metric", "Before", "After"), tuple(rows))


def _sail_rows(report: SailReport) -> list[Row]:
    """SAIL's headline rows: conflicts before/after, and what was trained."""
    before, after = report.cras_dimensions_before, report.cras_dimensions_after
    return [
        Row(
            "Conflict violation rate",
            (fmt_rate(report.violation_rate_before), fmt_rate(report.violation_rate_after)),
        ),
        Row("CRAS (mean, 1-5)", (fmt_num(report.cras_before), fmt_num(report.cras_after))),
        Row(
            "CRAS constraint compliance",
            (fmt_num(before.constraint_compliance), fmt_num(after.constraint_compliance)),
        ),
        Row("Focal layers", ("", fmt_layers(report.focal_layers))),
        Row("Trainable parameters", ("", fmt_num(report.trainable_params))),
        Row("Preference pairs", ("", f"{report.n_pairs} ({report.pairs.source})")),
        Row("Weighting / steps", ("", f"{report.weighting} / {report.steps_run}")),
    ]


def layer_table(report: DiagnoseReport) -> Table | None:
    """Per-layer refusal-direction norms and separation, model vs base; ``None`` if absent."""
    d = report.directions
    if not d.layers:
        return None
    rows, marked = [], []
    for i, layer in enumerate(d.layers):
        notes = []
        if layer.layer == d.selected_layer:
            notes.append("selected")
        if layer.layer == d.most_drifted_layer:
            notes.append("most drifted")
        if notes:
            marked.append(i)
        cells = (
            fmt_num(layer.refusal_norm),
            fmt_num(layer.refusal_norm_base),
            fmt_num(layer.cos_to_base),
            fmt_num(layer.separation),
            fmt_num(layer.separation_base),
            ", ".join(notes),
        )
        rows.append(Row(fmt_layers(layer.layer), cells))
    headers = (
        "Layer",
        "Refusal norm",
        "Refusal norm (base)",
        "Cos to base",
        "Separation",
        "Separation (base)",
        "Note",
    )
    return Table("Refusal direction per layer", headers, tuple(rows), tuple(marked), (0, 6))


def module_table(report: Report, top: int = TOP_MODULES) -> Table | None:
    """The ``top`` modules with the largest relative weight change; ``None`` if absent."""
    if not isinstance(report, DiagnoseReport) or report.weights is None:
        return None
    modules = sorted(report.weights.modules, key=lambda m: -(number(m.rel_delta) or 0.0))
    if not modules:
        return None
    rows = [
        Row(
            m.name,
            (
                fmt_layers(m.layer),
                fmt_num(m.rel_delta),
                fmt_rate(m.changed_share),
                fmt_rate(m.topk_energy),
            ),
        )
        for m in modules[:top]
    ]
    headers = ("Module", "Layer", "Relative change", "Changed share", "Top-k energy")
    return Table(f"Top {len(rows)} changed modules", headers, tuple(rows))


def category_table(report: DiagnoseReport) -> Table | None:
    """Harmful compliance rate per prompt category, model vs base; ``None`` if absent."""
    cats = report.behaviour.by_category
    if not cats:
        return None
    rows = [Row(name, (fmt_rate(c.model), fmt_rate(c.base))) for name, c in cats.items()]
    return Table("Harmful compliance by category", ("Category", "Model", "Base"), tuple(rows))


def focal_table(report: DiagnoseReport, top: int = TOP_MODULES) -> Table | None:
    """The focal attention heads by score; ``None`` if not measured."""
    if report.focal is None or not report.focal.heads:
        return None
    heads = sorted(report.focal.heads, key=lambda h: -(number(h.score) or 0.0))
    rows = [Row(fmt_layers(h.layer), (fmt_layers(h.head), fmt_num(h.score))) for h in heads[:top]]
    return Table("Focal attention heads", ("Layer", "Head", "Score"), tuple(rows))


def drift_table(report: DiagnoseReport, top: int = TOP_MODULES) -> Table | None:
    """The heads whose focal score moved most from the base; ``None`` without a base."""
    if report.focal is None or not report.focal.drift:
        return None
    rows = [
        Row(
            fmt_layers(d.layer),
            (fmt_layers(d.head), fmt_num(d.score_base), fmt_num(d.score), fmt_num(d.delta)),
        )
        for d in report.focal.drift[:top]
    ]
    headers = ("Layer", "Head", "Base score", "Model score", "Drift")
    return Table("Attention drift (heads that moved most)", headers, tuple(rows))


def focal_causal_table(report: DiagnoseReport) -> Table | None:
    """The focal heads' mean-ablation against random heads; ``None`` if not run."""
    c = report.focal.causal if report.focal is not None else None
    if c is None:
        return None
    rows = (
        Row("Model ablated", (c.model,)),
        Row("Violation rate unablated", (fmt_rate(c.baseline),)),
        Row(f"Change, {c.heads} focal heads ablated", (f"{100 * c.focal:+.1f} points",)),
        Row(
            f"Change, {c.heads} random heads ({c.draws} draws)",
            (f"{100 * c.random_mean:+.1f} +- {100 * c.random_std:.1f} points",),
        ),
        Row("Focal beats random", ("yes" if c.valid else "no",)),
    )
    return Table("Focal heads: causal check", ("Measure", "Value"), rows)


def cras_table(report: DiagnoseReport) -> Table | None:
    """CRAS per dimension, model vs base; ``None`` when CRAS was not measured."""
    cras = report.cras
    if cras is None:
        return None
    base = cras.dimensions_base.model_dump() if cras.dimensions_base is not None else {}
    rows = [Row("Mean", (fmt_num(cras.mean), fmt_num(cras.mean_base)))]
    for name, value in cras.dimensions.model_dump().items():
        label = name.replace("_", " ").capitalize()
        rows.append(Row(label, (fmt_num(value), fmt_num(base.get(name)))))
    rows.append(
        Row("Violation rate", (fmt_rate(cras.violation_rate), fmt_rate(cras.violation_rate_base)))
    )
    for category, rate in cras.violation_by_category.items():
        rows.append(Row(f"Violation rate, {category}", (fmt_rate(rate), NA)))
    rows.append(Row("Queries", (fmt_num(cras.n), "")))
    return Table(f"CRAS (1-5, {cras.judge} judge)", ("Dimension", "Model", "Base"), tuple(rows))


def mapping_table(name: str, value: Mapping[str, Any] | BaseModel | None) -> Table | None:
    """A flat-ish mapping or model (``causal``, ``timings``) as a key/value table."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not value:
        return None
    rows = tuple(Row(str(k), (fmt_value(v),)) for k, v in value.items())
    return Table(name, ("Key", "Value"), rows)


def steps_table(report: RepairReport) -> Table | None:
    """A repair's steps with every field any of them carries; ``None`` if absent."""
    steps = [s.model_dump() for s in getattr(report, "steps", ())]
    if not steps:
        return None
    keys = [k for k in steps[0] if k != "step" and any(s[k] is not None for s in steps)]
    rows = []
    for step in steps:
        cells = tuple(fmt_rate(step[k]) if _is_rate_key(k) else fmt_value(step[k]) for k in keys)
        rows.append(Row(fmt_value(step["step"]), cells))
    headers = ("Step", *(k.replace("_", " ").capitalize() for k in keys))
    return Table("Repair steps", headers, tuple(rows))


def extra_tables(report: DiagnoseReport) -> list[Table]:
    """Tables for the optional parts of a diagnose report, in display order."""
    tables = [
        category_table(report),
        focal_table(report),
        focal_causal_table(report),
        drift_table(report),
        cras_table(report),
        mapping_table("Causal check", report.directions.causal),
        mapping_table("Timings (s)", report.timings),
    ]
    return [t for t in tables if t is not None]


def all_tables(report: Report) -> list[Table]:
    """Every table a full (markdown/HTML) report shows, in display order."""
    if isinstance(report, RepairReport):
        tables = [summary_table(report), steps_table(report)]
    else:
        tables = [summary_table(report), layer_table(report), module_table(report)]
        tables += extra_tables(report)
    return [t for t in tables if t is not None]


_RATE_KEY = re.compile(r"(rate|fraction|share|task_metric)(_|$)")


def _is_rate_key(key: str) -> bool:
    return bool(_RATE_KEY.search(key))
