"""surgeon: diagnose why a fine-tuned LLM lost its alignment, and repair it surgically.

From Python, one call runs the whole audit::

    import surgeon
    result = surgeon.diagnose("path/to/fine-tune", base="path/to/base")
    report = result.report()  # the typed report.json (surgeon/report/schema.py)
    report.verdict, report.behaviour.harmful_rate
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DiagnoseConfig", "diagnose"]


def __getattr__(name: str) -> Any:
    # lazy, so that `import surgeon` stays cheap for the CLI's --help and for tools
    if name in ("diagnose", "DiagnoseConfig"):
        import importlib

        return getattr(importlib.import_module("surgeon.diagnosis"), name)
    raise AttributeError(f"module 'surgeon' has no attribute {name!r}")
