"""Write a report dict as report.json, report.md, report.html and PNG plots."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from surgeon.errors import InputError
from surgeon.report.fields import report_kind
from surgeon.report.html import render_html
from surgeon.report.markdown import render_markdown
from surgeon.report.plots import render_plots

PLOTS_DIR = "plots"

_TOP_DIAGNOSE = (
    "schema_version", "model", "base", "behaviour", "directions", "weights", "focal", "cras",
    "verdict", "reasons",
)  # fmt: skip
_TOP_REPAIR = (
    "schema_version", "method", "model", "base", "harmful_rate_before", "harmful_rate_after",
    "task_metric_before", "task_metric_after", "restored_fraction", "trainable_params",
    "focal_layers", "violation_rate_before", "violation_rate_after", "cras_before", "cras_after",
    "steps",
)  # fmt: skip
_NESTED = {
    "behaviour": (
        "harmful_rate", "harmful_rate_ci", "harmful_rate_base", "over_refusal_rate",
        "over_refusal_rate_base", "n_harmful", "n_harmless", "by_category",
    ),
    "directions": ("layers", "selected_layer", "most_drifted_layer", "causal"),
    "weights": ("modules", "changed_fraction", "most_changed_layers"),
    "focal": ("heads", "layers"),
    "cras": ("mean", "dimensions", "n"),
}  # fmt: skip
"""Canonical key order inside the known sections (conventions.md); other keys follow."""


def to_jsonable(value: Any, where: str = "report") -> Any:
    """``value`` as plain JSON data: NaN and infinities become ``None``, tuples lists, paths
    strings, numpy/torch scalars and arrays Python numbers and lists. Dict order is kept.

    Raises :class:`TypeError` naming the key path for anything else.
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(value.tolist(), where)
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def ordered(report: Mapping[str, Any]) -> dict[str, Any]:
    """``report`` with ``schema_version`` first and known keys in the order of conventions.md;
    unknown keys keep their relative order after the known ones."""
    top = _TOP_REPAIR if report_kind(report) == "repair" else _TOP_DIAGNOSE
    out = _reorder(report, top)
    for key, order in _NESTED.items():
        if isinstance(out.get(key), Mapping):
            out[key] = _reorder(out[key], order)
    return out


def report_json(report: Mapping[str, Any]) -> str:
    """report.json's text: canonical key order, indent 2, NaN as ``null``, trailing newline."""
    if "schema_version" not in report:
        raise ValueError("report: missing 'schema_version'")
    data = ordered(to_jsonable(report))
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def load_report(path: Path) -> dict[str, Any]:
    """Read a report.json back (key order preserved)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable report ({exc})") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise InputError(f"{path}: not a surgeon report (no schema_version)")
    return data


def write_report_files(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write report.json, report.md, report.html and ``plots/*.png`` into ``out_dir``.

    Returns the written paths (report.json first). ``out_dir`` is created if needed; the
    caller makes the directory atomic (see :func:`surgeon.outdir.atomic_output_dir`).
    """
    text = report_json(report)
    data = json.loads(text)  # the renderers see exactly what report.json holds
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = render_plots(data)
    written = [out_dir / "report.json"]
    written[0].write_text(text, encoding="utf-8")
    links = {}
    if plots:
        (out_dir / PLOTS_DIR).mkdir(exist_ok=True)
    for name, png in plots.items():
        path = out_dir / PLOTS_DIR / name
        path.write_bytes(png)
        links[name] = f"{PLOTS_DIR}/{name}"
        written.append(path)
    md = out_dir / "report.md"
    md.write_text(render_markdown(data, links), encoding="utf-8")
    html = out_dir / "report.html"
    html.write_text(render_html(data, plots), encoding="utf-8")
    return [written[0], md, html, *written[1:]]


def _reorder(mapping: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    out = {k: mapping[k] for k in order if k in mapping}
    out.update((k, v) for k, v in mapping.items() if k not in out)
    return out
