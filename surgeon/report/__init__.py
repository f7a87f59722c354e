"""Typed reports (surgeon/report/schema.py) and their files: report.json, report.md,
report.html, PNG plots and a terminal summary. Names load lazily (matplotlib only when a
report is drawn)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SCHEMA_VERSION": "surgeon.report.schema",
    "DiagnoseReport": "surgeon.report.schema",
    "Report": "surgeon.report.schema",
    "RollbackReport": "surgeon.report.schema",
    "render_html": "surgeon.report.html",
    "render_markdown": "surgeon.report.markdown",
    "render_plots": "surgeon.report.plots",
    "print_summary": "surgeon.report.terminal",
    "render_summary": "surgeon.report.terminal",
    "load_report": "surgeon.report.write",
    "report_json": "surgeon.report.write",
    "validate_json": "surgeon.report.write",
    "write_report_files": "surgeon.report.write",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'surgeon.report' has no attribute {name!r}")
