"""Typed reports (surgeon/report/schema.py) and their files: report.json, report.md,
report.html, PNG plots and a terminal summary."""

from surgeon.report.html import render_html
from surgeon.report.markdown import render_markdown
from surgeon.report.plots import render_plots
from surgeon.report.schema import SCHEMA_VERSION, DiagnoseReport, Report, RollbackReport
from surgeon.report.terminal import print_summary, render_summary
from surgeon.report.write import load_report, report_json, validate_json, write_report_files

__all__ = [
    "SCHEMA_VERSION",
    "DiagnoseReport",
    "Report",
    "RollbackReport",
    "load_report",
    "print_summary",
    "render_html",
    "render_markdown",
    "render_plots",
    "render_summary",
    "report_json",
    "validate_json",
    "write_report_files",
]
