"""A compact terminal summary of a report (rich): headline numbers, verdict and reasons.

Every string from the report is wrapped in :class:`rich.text.Text`, so ``[...]`` in a model
name or a reason is shown as written, never parsed as rich markup."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table as RichTable
from rich.text import Text

from surgeon.report import fields
from surgeon.report.schema import Report

_VERDICT_STYLE = {"pass": "bold green", "fail": "bold red"}


def render_summary(report: Report) -> RenderableType:
    """The headline table (model vs base, or before vs after) with the verdict and reasons.

    For a diagnose report the most changed modules follow (top 5), so a terminal user sees
    where the model moved without opening report.html.
    """
    summary = fields.summary_table(report)
    table = RichTable(title=Text(fields.title(report)), title_style="bold", header_style="bold")
    for i, header in enumerate(summary.headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in summary.rows:
        table.add_row(Text(row.label), *(_cell(c) for c in row.cells))
    parts: list[RenderableType] = [table]
    line = Text("Verdict: ", style="bold")
    line.append(report.verdict.upper(), style=_VERDICT_STYLE.get(report.verdict, "bold yellow"))
    parts.append(line)
    parts += [Text(f"  - {reason}") for reason in report.reasons]
    parts += [Text(f"  warning: {warning}", style="yellow") for warning in report.warnings]
    modules = fields.module_table(report, top=5)
    if modules is not None:
        top = RichTable(title=Text(modules.title), header_style="bold", title_style="bold")
        top.add_column("Module", no_wrap=False)
        top.add_column("Layer", justify="right")
        top.add_column("Relative change", justify="right")
        for row in modules.rows:
            top.add_row(Text(row.label), _cell(row.cells[0]), _cell(row.cells[1]))
        parts.append(top)
    return Group(*parts)


def print_summary(report: Report, console: Console | None = None) -> None:
    """Print :func:`render_summary` to ``console`` (a new stdout console by default)."""
    (console or Console()).print(render_summary(report))


def _cell(text: str) -> Text:
    return Text(text, style="dim") if text == fields.NA else Text(text)
