"""Write a typed report as report.json, report.md, report.html and PNG plots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from surgeon.errors import InputError
from surgeon.report.html import render_html
from surgeon.report.markdown import render_markdown
from surgeon.report.plots import render_plots
from surgeon.report.schema import SCHEMA_VERSION, Report, parse_report, shipped_schema_path

PLOTS_DIR = "plots"
STRICT_ENV = "SURGEON_STRICT_REPORTS"
"""When set (the test suite sets it), every written report.json is also validated against the
JSON Schema shipped in the package, so a schema that disagrees with its models fails a test."""


def report_json(report: Report) -> str:
    """report.json's text: the model's fields in their order, indent 2, trailing newline."""
    data = report.model_dump(mode="json")
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def validate_json(data: Any) -> None:
    """Validate a report.json object against the shipped JSON Schema of its kind."""
    import jsonschema

    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in ("diagnose", "repair"):
        raise ValueError(f"not a surgeon report kind: {kind!r}")
    schema = json.loads(shipped_schema_path(kind).read_text(encoding="utf-8"))
    jsonschema.validate(data, schema)


def load_report(path: Path) -> Report:
    """Read a report.json back as its typed report."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable report ({exc})") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise InputError(f"{path}: not a surgeon report (no schema_version)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise InputError(
            f"{path}: report schema {data['schema_version']!r}, this surgeon reads "
            f"{SCHEMA_VERSION!r}"
        )
    try:
        return parse_report(data)
    except (ValueError, ValidationError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{path}: not a valid surgeon report ({first})") from None


def write_report_files(report: Report, out_dir: Path) -> list[Path]:
    """Write report.json, report.md, report.html and ``plots/*.png`` into ``out_dir``.

    Returns the written paths (report.json first). ``out_dir`` is created if needed; the
    caller makes the directory atomic (see :func:`surgeon.outdir.atomic_output_dir`).
    """
    text = report_json(report)
    if os.environ.get(STRICT_ENV):
        validate_json(json.loads(text))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = render_plots(report)
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
    md.write_text(render_markdown(report, links), encoding="utf-8")
    html = out_dir / "report.html"
    html.write_text(render_html(report, plots), encoding="utf-8")
    return [written[0], md, html, *written[1:]]
