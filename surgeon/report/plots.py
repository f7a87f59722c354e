"""Plots of a report dict as PNG bytes (matplotlib's Agg canvas; pyplot's global state and
the process-wide backend are left alone).

Each function returns ``None`` when the report lacks the data for its plot, so callers can
simply skip it. :func:`render_plots` returns every plot a report supports, keyed by file name.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from surgeon.report.fields import number
from surgeon.report.schema import DiagnoseReport, RepairReport, Report

MODEL_COLOR = "#c0392b"
BASE_COLOR = "#2c7bb6"
SELECTED_COLOR = "#1a9850"
DRIFT_COLOR = "#7b3294"
DPI = 110
MAX_ROWS = 30
"""More module types than this in the heatmap are merged by their last name component."""

PLOT_FILES = {
    "refusal_norm": "refusal_norm.png",
    "separation": "separation.png",
    "weight_change": "weight_change.png",
    "repair_steps": "repair_steps.png",
    "focal": "focal_heads.png",
}
"""Plot name -> PNG file name (inside the report's ``plots/`` folder)."""

PLOT_TITLES = {
    "refusal_norm": "Refusal direction norm per layer",
    "separation": "Harmful/harmless separation per layer",
    "weight_change": "Relative weight change by module type and layer",
    "repair_steps": "Harmful rate and task metric per repair step",
    "focal": "Focal-head score per layer and head (focal heads boxed) and its drift from the base",
}
"""Plot name -> caption."""


def refusal_norm_plot(report: DiagnoseReport) -> bytes | None:
    """Per-layer norm of the difference-of-means refusal direction, model vs base."""
    return _layer_lines(
        report,
        ("refusal_norm", "refusal_norm_base"),
        "refusal direction norm",
        PLOT_TITLES["refusal_norm"],
        mark_layers=False,
    )


def separation_plot(report: DiagnoseReport) -> bytes | None:
    """Per-layer separation of harmful vs harmless activations, model vs base.

    The selected layer and the most drifted layer are marked with vertical lines.
    """
    return _layer_lines(
        report,
        ("separation", "separation_base"),
        "separation",
        PLOT_TITLES["separation"],
        mark_layers=True,
    )


def weight_change_heatmap(report: DiagnoseReport) -> bytes | None:
    """Heatmap of ``rel_delta``: rows are module types, columns decoder layers."""
    if report.weights is None:
        return None
    cells: dict[tuple[str, int], float] = {}
    for m in report.weights.modules:
        layer, value = m.layer, number(m.rel_delta)
        if layer is None or value is None:
            continue
        kind = m.module_type or module_type(m.name, layer)
        cells[(kind, layer)] = max(value, cells.get((kind, layer), value))
    if not cells:
        return None
    if len({k for k, _ in cells}) > MAX_ROWS:  # e.g. one row per MoE expert: keep the leaf
        leaves: dict[tuple[str, int], float] = {}
        for (kind, layer), value in cells.items():
            key = (kind.rsplit(".", 1)[-1], layer)
            leaves[key] = max(value, leaves.get(key, value))
        cells = leaves
    kinds = sorted({k for k, _ in cells})
    layers = list(range(min(la for _, la in cells), max(la for _, la in cells) + 1))
    grid = np.full((len(kinds), len(layers)), np.nan)
    for (kind, layer), value in cells.items():
        grid[kinds.index(kind), layers.index(layer)] = value
    width = min(14.0, 3.2 + 0.62 * len(layers))
    fig = Figure(figsize=(max(width, 6.5), 1.4 + 0.34 * len(kinds)), dpi=DPI)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["magma_r"].with_extremes(bad="#e8e8e8")
    vmax = float(np.nanmax(grid)) or 1.0
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax)
    ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
    step = max(1, len(layers) // 24)
    ax.set_xticks(range(0, len(layers), step), [str(la) for la in layers[::step]], fontsize=8)
    ax.set_xlabel("layer")
    if len(layers) * len(kinds) <= 240:
        for r in range(len(kinds)):
            for c in range(len(layers)):
                if np.isfinite(grid[r, c]):
                    dark = grid[r, c] > 0.55 * vmax
                    ax.text(
                        c,
                        r,
                        _short(grid[r, c]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "#222222",
                    )
    bar = fig.colorbar(image, ax=ax, pad=0.015)
    bar.set_label("rel_delta (relative weight change)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    ax.set_title(PLOT_TITLES["weight_change"], fontsize=10)
    return _png(fig)


def repair_steps_plot(report: RepairReport) -> bytes | None:
    """Harmful rate, task metric (and violation rate, if any) after each repair step."""
    steps = [s.model_dump() for s in getattr(report, "steps", ())]
    series = {
        "harmful rate": ("harmful_rate", MODEL_COLOR, "o"),
        "task metric": ("task_metric", BASE_COLOR, "s"),
        "violation rate": ("violation_rate", "#e08214", "^"),
    }
    xs = [number(s.get("step")) for s in steps]
    if any(x is None for x in xs):
        xs = [float(i) for i in range(len(steps))]
    fig = Figure(figsize=(7.5, 3.6), dpi=DPI)
    ax = fig.add_subplot()
    drawn = False
    for label, (key, color, marker) in series.items():
        ys = [number(s.get(key)) for s in steps]
        if all(y is None for y in ys):
            continue
        ax.plot(
            xs,
            [np.nan if y is None else y for y in ys],
            marker=marker,
            color=color,
            label=label,
            linewidth=1.6,
            markersize=4,
        )
        drawn = True
    if not drawn:
        return None
    ax.set_ylim(-0.03, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(PLOT_TITLES["repair_steps"], fontsize=10)
    return _png(fig)


def focal_heatmap(report: DiagnoseReport) -> bytes | None:
    """Heatmaps of the focal-head scores (layer x query head), and of their drift (model minus
    base) when there is a base; the focal heads are boxed."""
    focal = report.focal
    if focal is None or not focal.scores:
        return None
    panels = [("model", np.array(focal.scores, dtype=float), "viridis", False)]
    if focal.drift_scores is not None:
        panels.append(
            ("drift (model - base)", np.array(focal.drift_scores, dtype=float), "RdBu_r", True)
        )
    n_layers, n_heads = panels[0][1].shape
    fig = Figure(figsize=(min(14.0, 2.0 + 4.2 * len(panels)), 1.6 + 0.22 * n_layers), dpi=DPI)
    for i, (title, grid, cmap_name, centred) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        vmax = float(np.nanmax(np.abs(grid))) or 1.0
        image = ax.imshow(
            grid,
            aspect="auto",
            cmap=matplotlib.colormaps[cmap_name],
            vmin=-vmax if centred else float(np.nanmin(grid)),
            vmax=vmax,
        )
        for h in focal.heads:
            ax.add_patch(
                matplotlib.patches.Rectangle(
                    (h.head - 0.5, h.layer - 0.5), 1, 1, fill=False, edgecolor="#ff3030", lw=1.2
                )
            )
        ax.set_xlabel("query head")
        hstep = max(1, n_heads // 16)
        ax.set_xticks(range(0, n_heads, hstep), [str(h) for h in range(0, n_heads, hstep)])
        ax.set_ylabel("layer")
        step = max(1, n_layers // 16)
        ax.set_yticks(range(0, n_layers, step), [str(la) for la in range(0, n_layers, step)])
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        bar = fig.colorbar(image, ax=ax, pad=0.02)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(f"{PLOT_TITLES['focal']} ({focal.rule})", fontsize=9)
    return _png(fig)


def render_plots(report: Report) -> dict[str, bytes]:
    """Every plot the report supports: file name (e.g. ``"separation.png"``) -> PNG bytes."""
    makers: dict[str, Callable[[Any], bytes | None]]
    if isinstance(report, RepairReport):
        makers = {"repair_steps": repair_steps_plot}
    else:
        makers = {
            "refusal_norm": refusal_norm_plot,
            "separation": separation_plot,
            "weight_change": weight_change_heatmap,
            "focal": focal_heatmap,
        }
    out = {}
    for name, make in makers.items():
        png = make(report)
        if png is not None:
            out[PLOT_FILES[name]] = png
    return out


def module_type(name: str, layer: int | None) -> str:
    """The part of a module name after its layer index: ``model.layers.3.mlp.up_proj`` ->
    ``mlp.up_proj`` (a trailing ``weight``/``bias`` dropped); the whole name if no index."""
    parts = name.split(".")
    if parts and parts[-1] in ("weight", "bias"):
        parts = parts[:-1]
    if layer is not None:
        for i in range(len(parts) - 1, 0, -1):
            if parts[i] == str(layer) and i + 1 < len(parts):
                return ".".join(parts[i + 1 :])
    return ".".join(parts) or "?"


def _layer_lines(
    report: DiagnoseReport,
    keys: tuple[str, str],
    ylabel: str,
    heading: str,
    *,
    mark_layers: bool,
) -> bytes | None:
    rows = [r.model_dump() for r in report.directions.layers]
    if not rows:
        return None
    xs = [r["layer"] for r in rows]
    model = [number(r[keys[0]]) for r in rows]
    base = [number(r[keys[1]]) for r in rows]
    if all(v is None for v in model + base):
        return None
    fig = Figure(figsize=(7.5, 3.6), dpi=DPI)
    ax = fig.add_subplot()
    _line(ax, xs, model, "model", MODEL_COLOR, "o")
    _line(ax, xs, base, "base", BASE_COLOR, "s", dashed=True)
    if mark_layers:
        selected = report.directions.selected_layer
        drifted = report.directions.most_drifted_layer
        if selected is not None:
            ax.axvline(
                selected,
                color=SELECTED_COLOR,
                linestyle="--",
                linewidth=1.2,
                label=f"selected layer ({selected})",
            )
        if drifted is not None:
            ax.axvline(
                drifted,
                color=DRIFT_COLOR,
                linestyle=":",
                linewidth=1.6,
                label=f"most drifted layer ({drifted})",
            )
    if len(xs) <= 16:
        ax.set_xticks(xs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(heading, fontsize=10)
    return _png(fig)


def _line(
    ax: Axes,
    xs: list[int],
    ys: list[float | None],
    label: str,
    color: str,
    marker: str,
    *,
    dashed: bool = False,
) -> None:
    if all(y is None for y in ys):
        return
    values = [np.nan if y is None else y for y in ys]
    ax.plot(
        xs,
        values,
        marker=marker,
        color=color,
        label=label,
        linewidth=1.6,
        markersize=4,
        linestyle="--" if dashed else "-",
    )


def _short(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 0.01:
        return f"{value:.2f}".lstrip("0") if value < 1 else f"{value:.1f}"
    return f"{value:.0e}".replace("e-0", "e-")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
