"""report.md: the report as GitHub-flavoured markdown, with links to the PNG plots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from surgeon.report import fields
from surgeon.report.fields import Table
from surgeon.report.plots import PLOT_FILES, PLOT_TITLES
from surgeon.report.schema import RepairReport, Report

_ESCAPE = str.maketrans({"|": "\\|", "\n": " ", "\r": " ", "<": "&lt;"})
"""Table-breaking characters and ``<`` (raw HTML in markdown) are neutralised."""


def render_markdown(report: Report, plots: Mapping[str, str] | None = None) -> str:
    """The report as markdown.

    ``plots`` maps a PNG file name (``"separation.png"``) to the relative link it is written
    under (``"plots/separation.png"``); only those plots are linked.
    """
    plots = plots or {}
    out = [f"# {_text(fields.title(report))}", ""]
    out += _provenance_lines(report)
    out += [f"**Verdict: {_text(report.verdict.upper())}**", ""]
    out += [f"- {_text(r)}" for r in report.reasons] or ["- (no reasons given)"]
    out.append("")
    if report.warnings:
        out += ["**Warnings**", "", *(f"- {_text(w)}" for w in report.warnings), ""]
    tables = fields.all_tables(report)
    for i, table in enumerate(tables):
        out += _table(table)
        if i == 0:
            out += _plot_links(plots)
    return "\n".join(out).rstrip() + "\n"


def _provenance_lines(report: Report) -> list[str]:
    lines = [f"- Model: `{_code(report.model)}`"]
    lines.append(f"- Base: `{_code(report.base)}`" if report.base else "- Base: n/a")
    if isinstance(report, RepairReport):
        lines.append(f"- Method: {_text(report.method)}")
    lines.append(f"- Schema version: {_text(report.schema_version)}")
    return [*lines, ""]


def _plot_links(plots: Mapping[str, str]) -> list[str]:
    lines = []
    for name, file in PLOT_FILES.items():
        if file in plots:
            lines += [f"![{PLOT_TITLES[name]}]({plots[file]})", ""]
    return (["## Plots", "", *lines]) if lines else []


def _table(table: Table) -> list[str]:
    lines = [f"## {_text(table.title)}", ""]
    lines.append("| " + " | ".join(_text(h) for h in table.headers) + " |")
    align = ["---" if i in table.left else "---:" for i in range(len(table.headers))]
    lines.append("|" + "|".join(align) + "|")
    for i, row in enumerate(table.rows):
        label = _text(row.label)
        if i in table.marked:
            label = f"**{label}**"
        lines.append("| " + " | ".join([label, *(_text(c) for c in row.cells)]) + " |")
    return [*lines, ""]


def _text(value: Any) -> str:
    return ("n/a" if value is None else str(value)).translate(_ESCAPE)


def _code(value: Any) -> str:
    return ("n/a" if value is None else str(value)).replace("`", "'").replace("\n", " ")
