"""What a report shows, independent of how it is drawn (markdown, HTML, terminal).

Every function here reads a report dict (the keys of conventions.md) defensively: any key may be
missing or ``None`` (no base model, no CRAS run, an older schema), and numbers may be ``NaN``.
Missing values render as ``n/a``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

NA = "n/a"
TOP_MODULES = 10

ReportKind = Literal["diagnose", "repair"]


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


def report_kind(report: Mapping[str, Any]) -> ReportKind:
    """``"repair"`` when the report names a repair method, else ``"diagnose"``."""
    return "repair" if "method" in report and "behaviour" not in report else "diagnose"


def get(report: Mapping[str, Any] | None, *path: str) -> Any:
    """The value at ``path`` inside nested dicts, or ``None`` where any step is missing."""
    node: Any = report
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


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


def title(report: Mapping[str, Any]) -> str:
    """The report's heading, e.g. ``"surgeon diagnose: org/model"``."""
    kind = report_kind(report)
    model = report.get("model") or "unknown model"
    if kind == "repair":
        return f"surgeon repair ({report.get('method') or 'unknown method'}): {model}"
    return f"surgeon diagnose: {model}"


def verdict(report: Mapping[str, Any]) -> str | None:
    """``"pass"``/``"fail"`` (lower case) for a diagnose report, ``None`` when absent."""
    v = report.get("verdict")
    return str(v).lower() if v is not None else None


def reasons(report: Mapping[str, Any]) -> list[str]:
    """The verdict's reasons as strings."""
    value = report.get("reasons")
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence):
        return []
    return [str(r) for r in value if r is not None]


def summary_table(report: Mapping[str, Any]) -> Table:
    """The headline numbers: model vs base (diagnose) or before vs after (repair)."""
    if report_kind(report) == "repair":
        return _repair_summary(report)
    b = get(report, "behaviour")
    rows = [
        Row(
            "Harmful compliance rate",
            (fmt_rate(get(b, "harmful_rate")), fmt_rate(get(b, "harmful_rate_base"))),
        ),
        Row("Harmful rate 95% CI", (fmt_ci(get(b, "harmful_rate_ci")), "")),
        Row(
            "Over-refusal rate",
            (fmt_rate(get(b, "over_refusal_rate")), fmt_rate(get(b, "over_refusal_rate_base"))),
        ),
        Row("Harmful prompts", (fmt_num(get(b, "n_harmful")), "")),
        Row("Harmless prompts", (fmt_num(get(b, "n_harmless")), "")),
        Row("Selected layer", (fmt_layers(get(report, "directions", "selected_layer")), "")),
        Row(
            "Most drifted layer",
            (fmt_layers(get(report, "directions", "most_drifted_layer")), ""),
        ),
        Row("Changed weight fraction", (fmt_rate(get(report, "weights", "changed_fraction")), "")),
        Row("Most changed layers", (fmt_layers(get(report, "weights", "most_changed_layers")), "")),
        Row("Focal layers", (fmt_layers(get(report, "focal", "layers")), "")),
        Row("CRAS (mean, 1-5)", (fmt_num(get(report, "cras", "mean")), "")),
    ]
    return Table("Summary", ("Metric", "Model", "Base"), tuple(rows))


_REPAIR_PAIRS = (
    # label, key before, key after, formatter, shown even when both keys are absent
    ("Harmful compliance rate", "harmful_rate_before", "harmful_rate_after", fmt_rate, True),
    ("Task metric", "task_metric_before", "task_metric_after", fmt_rate, True),
    ("Over-refusal (guard prompts)", "over_refusal_before", "over_refusal_after", fmt_rate, False),
    ("Constraint violation rate", "violation_rate_before", "violation_rate_after", fmt_rate, False),
    ("CRAS (mean, 1-5)", "cras_before", "cras_after", fmt_num, False),
)


def _repair_summary(report: Mapping[str, Any]) -> Table:
    rows: list[Row] = []
    for label, before, after, fmt, always in _REPAIR_PAIRS:
        if always or before in report or after in report:
            b, a = _scalar(report.get(before)), _scalar(report.get(after))
            rows.append(Row(label, (fmt(b), fmt(a))))
    for label, key, fmt in (
        ("Restored fraction", "restored_fraction", fmt_rate),
        ("Restored / decoder-layer weights", "restored_fraction_decoder", fmt_rate),
        ("Trainable parameters", "trainable_params", fmt_num),
        ("Focal layers", "focal_layers", fmt_layers),
    ):
        if key in report:
            rows.append(Row(label, ("", fmt(report.get(key)))))
    return Table("Summary", ("Metric", "Before", "After"), tuple(rows))


def _scalar(value: Any) -> Any:
    """A CRAS dict ``{mean, ...}`` reduced to its mean; other values unchanged."""
    return value.get("mean") if isinstance(value, Mapping) else value


def layer_table(report: Mapping[str, Any]) -> Table | None:
    """Per-layer refusal-direction norms and separation, model vs base; ``None`` if absent."""
    layers = _dicts(get(report, "directions", "layers"))
    if not layers:
        return None
    selected = get(report, "directions", "selected_layer")
    drifted = get(report, "directions", "most_drifted_layer")
    rows, marked = [], []
    for i, layer in enumerate(layers):
        idx = layer.get("layer")
        notes = []
        if idx is not None and idx == selected:
            notes.append("selected")
        if idx is not None and idx == drifted:
            notes.append("most drifted")
        if notes:
            marked.append(i)
        cells = (
            fmt_num(layer.get("refusal_norm")),
            fmt_num(layer.get("refusal_norm_base")),
            fmt_num(layer.get("cos_to_base")),
            fmt_num(layer.get("separation")),
            fmt_num(layer.get("separation_base")),
            ", ".join(notes),
        )
        rows.append(Row(fmt_layers(idx), cells))
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


def module_table(report: Mapping[str, Any], top: int = TOP_MODULES) -> Table | None:
    """The ``top`` modules with the largest relative weight change; ``None`` if absent."""
    modules = [m for m in _dicts(get(report, "weights", "modules")) if m.get("name")]
    if not modules:
        return None
    modules.sort(key=lambda m: -(number(m.get("rel_delta")) or 0.0))
    rows = [
        Row(
            str(m.get("name")),
            (
                fmt_layers(m.get("layer")),
                fmt_num(m.get("rel_delta")),
                fmt_rate(m.get("changed_share")),
                fmt_rate(m.get("topk_energy")),
            ),
        )
        for m in modules[:top]
    ]
    headers = ("Module", "Layer", "Relative change", "Changed share", "Top-k energy")
    return Table(f"Top {len(rows)} changed modules", headers, tuple(rows))


def category_table(report: Mapping[str, Any]) -> Table | None:
    """Harmful compliance rate per prompt category, model vs base; ``None`` if absent."""
    cats = get(report, "behaviour", "by_category")
    if not isinstance(cats, Mapping) or not cats:
        return None
    rows = []
    for name, value in cats.items():
        if isinstance(value, Mapping):
            rows.append(Row(str(name), (fmt_rate(value.get("model")), fmt_rate(value.get("base")))))
        else:
            rows.append(Row(str(name), (fmt_rate(value), NA)))
    return Table("Harmful compliance by category", ("Category", "Model", "Base"), tuple(rows))


def focal_table(report: Mapping[str, Any], top: int = TOP_MODULES) -> Table | None:
    """The focal attention heads by score; ``None`` if absent."""
    heads = _dicts(get(report, "focal", "heads"))
    if not heads:
        return None
    heads.sort(key=lambda h: -(number(h.get("score")) or 0.0))
    rows = [
        Row(fmt_layers(h.get("layer")), (fmt_layers(h.get("head")), fmt_num(h.get("score"))))
        for h in heads[:top]
    ]
    return Table("Focal attention heads", ("Layer", "Head", "Score"), tuple(rows))


def cras_table(report: Mapping[str, Any]) -> Table | None:
    """CRAS per dimension; ``None`` when CRAS was not measured."""
    cras = report.get("cras")
    if not isinstance(cras, Mapping):
        return None
    rows = [Row("Mean", (fmt_num(cras.get("mean")),))]
    dims = cras.get("dimensions")
    if isinstance(dims, Mapping):
        rows += [Row(str(k).replace("_", " ").capitalize(), (fmt_num(v),)) for k, v in dims.items()]
    rows.append(Row("Prompts", (fmt_num(cras.get("n")),)))
    return Table("CRAS (1-5)", ("Dimension", "Score"), tuple(rows))


def mapping_table(name: str, value: Any) -> Table | None:
    """Any flat-ish dict (``causal``, ``timings``) as a key/value table; ``None`` if empty."""
    if not isinstance(value, Mapping) or not value:
        return None
    rows = tuple(Row(str(k), (fmt_value(v),)) for k, v in value.items())
    return Table(name, ("Key", "Value"), rows)


def steps_table(report: Mapping[str, Any]) -> Table | None:
    """A repair's steps with every numeric or text field they carry; ``None`` if absent."""
    steps = _dicts(report.get("steps"))
    if not steps:
        return None
    keys: list[str] = []
    for step in steps:
        keys += [k for k in step if k not in keys and k != "step"]
    rows = []
    for i, step in enumerate(steps):
        label = step.get("step", i)
        cells = tuple(
            fmt_rate(step.get(k)) if _is_rate_key(k) else fmt_value(step.get(k)) for k in keys
        )
        rows.append(Row(fmt_value(label), cells))
    headers = ("Step", *(k.replace("_", " ").capitalize() for k in keys))
    return Table("Repair steps", headers, tuple(rows))


def extra_tables(report: Mapping[str, Any]) -> list[Table]:
    """Tables for the optional parts of a diagnose report, in display order."""
    tables = [
        category_table(report),
        focal_table(report),
        cras_table(report),
        mapping_table("Causal check", get(report, "directions", "causal")),
        mapping_table("Timings (s)", report.get("timings")),
    ]
    return [t for t in tables if t is not None]


def all_tables(report: Mapping[str, Any]) -> list[Table]:
    """Every table a full (markdown/HTML) report shows, in display order."""
    if report_kind(report) == "repair":
        tables = [summary_table(report), steps_table(report)]
    else:
        tables = [summary_table(report), layer_table(report), module_table(report)]
        tables += extra_tables(report)
    return [t for t in tables if t is not None]


_RATE_KEY = re.compile(r"(rate|fraction|share|task_metric)(_|$)")


def _is_rate_key(key: str) -> bool:
    return bool(_RATE_KEY.search(key))


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The dict entries of a list (anything else dropped)."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [dict(v) for v in value if isinstance(v, Mapping)]
