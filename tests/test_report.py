"""Report rendering: report.json, report.md, report.html, PNG plots, terminal summary.

Every report here was produced by the real code on tiny models (the ``tiny_reports`` fixture
of conftest.py); edge cases are those reports with a field changed and validated again.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError
from rich.console import Console

from surgeon.errors import InputError
from surgeon.report import (
    load_report,
    print_summary,
    render_html,
    render_markdown,
    render_plots,
    report_json,
    validate_json,
    write_report_files,
)
from surgeon.report.fields import all_tables, fmt_num, fmt_rate, summary_table
from surgeon.report.plots import module_type
from surgeon.report.schema import (
    SCHEMA_VERSION,
    DiagnoseReport,
    RollbackReport,
    json_schema,
    main,
    parse_report,
)


def changed(report: Any, **update: Any) -> Any:
    """``report`` with top-level fields replaced, validated again (so NaN becomes None)."""
    return type(report).model_validate({**report.model_dump(), **update})


@pytest.fixture(scope="module")
def full(tiny_reports: dict[str, Any]) -> DiagnoseReport:
    return tiny_reports["diagnose"]


@pytest.fixture(scope="module")
def alone(tiny_reports: dict[str, Any]) -> DiagnoseReport:
    return tiny_reports["alone"]


@pytest.fixture(scope="module")
def repair(tiny_reports: dict[str, Any]) -> RollbackReport:
    return tiny_reports["repair"]


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def png_distinct_colours(png: bytes) -> int:
    """Number of distinct RGB(A) pixel values of an 8-bit RGBA/RGB non-interlaced PNG."""
    width, height = png_size(png)
    bit_depth, colour_type = png[24], png[25]
    assert bit_depth == 8 and colour_type in (2, 6)
    channels = 4 if colour_type == 6 else 3
    data, pos = b"", 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        if kind == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(data)
    stride = width * channels
    colours: set[bytes] = set()
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 0xFF
            elif ftype == 2:
                line[x] = (line[x] + b) & 0xFF
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 0xFF
        if y % 4 == 0:  # a sample of rows is plenty
            colours.update(bytes(line[i : i + channels]) for i in range(0, stride, channels))
        prev = line
    return len(colours)


# ---------------------------------------------------------------------------------------------
# the schema


def test_shipped_schemas_are_current() -> None:
    assert main(["--check"]) == 0


def test_schema_version_is_one_constant(full: DiagnoseReport, repair: RollbackReport) -> None:
    for kind in ("diagnose", "repair"):
        schema = json_schema(kind)
        assert SCHEMA_VERSION in schema["$id"]
    assert full.schema_version == repair.schema_version == SCHEMA_VERSION


def test_report_json_follows_the_model(full: DiagnoseReport, tmp_path: Path) -> None:
    text = report_json(full)
    data = json.loads(text)
    assert list(data) == list(DiagnoseReport.model_fields)
    assert text.startswith(f'{{\n  "schema_version": "{SCHEMA_VERSION}",\n  "kind": "diagnose",')
    assert list(data["behaviour"])[:3] == ["harmful_rate", "harmful_rate_ci", "harmful_rate_base"]
    path = tmp_path / "report.json"
    path.write_text(text)
    assert load_report(path) == full
    assert report_json(load_report(path)) == text  # the round trip is a fixed point
    validate_json(data)


def test_validation_catches_what_the_models_reject(full: DiagnoseReport) -> None:
    """The JSON Schema check is not vacuous: an unknown key, a wrong type and an
    out-of-range rate each fail it (and the model too)."""
    data = json.loads(report_json(full))
    bad_cases = [
        {**data, "extra": 1},
        {**data, "verdict": "maybe"},
        {**data, "behaviour": {**data["behaviour"], "harmful_rate": 1.5}},
        {**data, "directions": {**data["directions"], "selected_layer": "three"}},
    ]
    for bad in bad_cases:
        with pytest.raises(jsonschema.ValidationError):
            validate_json(bad)
        with pytest.raises(ValidationError):
            parse_report(bad)


def test_nan_becomes_null(full: DiagnoseReport, tmp_path: Path) -> None:
    layers = [layer.model_dump() for layer in full.directions.layers]
    layers[0]["separation"] = float("nan")
    layers[1]["cos_to_base"] = float("inf")
    directions = {**full.directions.model_dump(), "layers": layers}
    report = changed(full, directions=directions)
    assert report.directions.layers[0].separation is None
    written = write_report_files(report, tmp_path)
    text = written[0].read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["directions"]["layers"][0]["separation"] is None
    assert data["directions"]["layers"][1]["cos_to_base"] is None
    md = (tmp_path / "report.md").read_text()
    row = re.search(r"^\| (?:\*\*)?0(?:\*\*)? \|(.*)$", md, re.M)
    assert row is not None
    cells = [c.strip() for c in row.group(1).split("|")]
    assert cells[0] == fmt_num(layers[0]["refusal_norm"]) and cells[3] == "n/a"


def test_load_report_rejects_non_reports(tmp_path: Path, full: DiagnoseReport) -> None:
    bad = tmp_path / "r.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match=r"r\.json: not a surgeon report"):
        load_report(bad)
    bad.write_text(json.dumps({**json.loads(report_json(full)), "schema_version": "1.0"}))
    with pytest.raises(InputError, match=r"r\.json: report schema '1.0', this surgeon reads"):
        load_report(bad)
    bad.write_text(json.dumps({**json.loads(report_json(full)), "verdict": 3}))
    with pytest.raises(InputError, match=r"r\.json: not a valid surgeon report"):
        load_report(bad)


# ---------------------------------------------------------------------------------------------
# write_report_files


def test_write_report_files_full(full: DiagnoseReport, tmp_path: Path) -> None:
    written = write_report_files(full, tmp_path / "out")
    names = [p.relative_to(tmp_path / "out").as_posix() for p in written]
    assert names == [
        "report.json",
        "report.md",
        "report.html",
        "plots/refusal_norm.png",
        "plots/separation.png",
        "plots/weight_change.png",
        "plots/focal_heads.png",
    ]
    for path in written[3:]:
        width, height = png_size(path.read_bytes())
        assert width >= 600 and height >= 250
        assert png_distinct_colours(path.read_bytes()) >= 8
    md = written[1].read_text()
    for link in names[3:]:
        assert f"]({link})" in md


def test_write_report_files_repair(repair: RollbackReport, tmp_path: Path) -> None:
    written = write_report_files(repair, tmp_path)
    assert [p.name for p in written] == ["report.json", "report.md", "report.html"] + (
        ["repair_steps.png"] if repair.steps else []
    )
    data = json.loads(written[0].read_text())
    assert list(data) == list(RollbackReport.model_fields)
    assert list(data)[:4] == ["schema_version", "kind", "model", "base"]
    md = written[1].read_text()
    before, after = fmt_rate(repair.harmful_rate_before), fmt_rate(repair.harmful_rate_after)
    assert f"| Harmful compliance rate | {before} | {after} |" in md
    assert f"| Restored fraction |  | {fmt_rate(repair.restored_fraction)} |" in md
    assert "## Repair steps" in md
    assert len(re.findall(r"^\| \d+ \|", md.split("## Repair steps")[1], re.M)) == len(repair.steps)


# ---------------------------------------------------------------------------------------------
# markdown


def test_markdown_full_report(full: DiagnoseReport) -> None:
    report = changed(full, reasons=["drifted <script>alert(1)</script>", *full.reasons])
    md = render_markdown(report, {"separation.png": "plots/separation.png"})
    b = report.behaviour
    assert md.startswith(f"# surgeon diagnose: {report.model}\n")
    assert f"**Verdict: {report.verdict.upper()}**" in md
    assert "&lt;script>" in md and "<script>" not in md
    rates = f"{fmt_rate(b.harmful_rate)} | {fmt_rate(b.harmful_rate_base)}"
    assert f"| Harmful compliance rate | {rates} |" in md
    lo, hi = b.harmful_rate_ci
    assert f"| Harmful rate 95% CI | [{100 * lo:.1f}%, {100 * hi:.1f}%] |  |" in md
    drifted = report.directions.most_drifted_layer
    assert drifted is not None
    assert re.search(rf"^\| \*\*{drifted}\*\* \|.*most drifted \|$", md, re.M)
    top = re.search(r"## Top 10 changed modules\n\n(.*?)\n\n", md, re.S)
    assert top is not None and report.weights is not None
    biggest = max(report.weights.modules, key=lambda m: m.rel_delta or 0.0)
    assert top.group(1).splitlines()[2].startswith(f"| {biggest.name} | {biggest.layer} |")
    assert "![Harmful/harmless separation per layer](plots/separation.png)" in md
    assert "refusal_norm.png" not in md  # only the plots passed in are linked
    for cat, rate in b.by_category.items():
        assert f"| {cat} | {fmt_rate(rate.model)} | {fmt_rate(rate.base)} |" in md
    assert "## Causal check" in md and "| ablation_kl |" in md


def test_markdown_without_base_says_na(alone: DiagnoseReport) -> None:
    md = render_markdown(alone)
    assert "- Base: n/a" in md
    assert f"| Harmful compliance rate | {fmt_rate(alone.behaviour.harmful_rate)} | n/a |" in md
    assert "| Most drifted layer | n/a |  |" in md
    assert "| Changed weight fraction | n/a |  |" in md
    assert f"| CRAS (mean, 1-5) | {fmt_num(alone.cras.mean)} | n/a |" in md
    first = alone.directions.layers[0]
    assert f"| 0 | {fmt_num(first.refusal_norm)} | n/a | n/a | {fmt_num(first.separation)} |" in md
    assert "changed modules" not in md and "CRAS (1-5)" not in md


def test_markdown_escapes_table_breakers(full: DiagnoseReport) -> None:
    cats = {k: v.model_dump() for k, v in full.behaviour.by_category.items()}
    cats["fraud <&> | scams"] = next(iter(cats.values()))
    report = changed(full, behaviour={**full.behaviour.model_dump(), "by_category": cats})
    md = render_markdown(report)
    assert "| fraud &lt;&> \\| scams |" in md


# ---------------------------------------------------------------------------------------------
# HTML


def test_html_is_self_contained_and_escaped(full: DiagnoseReport) -> None:
    report = changed(full, reasons=["<script>alert(1)</script>"])
    html = render_html(report, render_plots(report))
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html)
    assert "http:" not in text and "https:" not in text and "//" not in text
    assert "url(" not in html and "@import" not in html and "@font-face" not in html
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", html, re.I)
    assert len(refs) == 5  # the favicon stub and four plots
    assert all(r.startswith("data:") for r in refs)
    assert "default-src 'none'; img-src data:" in html


def test_html_escapes_names(full: DiagnoseReport) -> None:
    html = render_html(changed(full, model='/m/"x" <img src=a.png onerror=1>'), {})
    assert "<img" not in html
    assert "&lt;img src=a.png onerror=1&gt;" in html and "&quot;x&quot;" in html


def test_html_without_base(alone: DiagnoseReport) -> None:
    html = render_html(alone, render_plots(alone))
    assert '<td class="na">n/a</td>' in html
    assert f"Verdict: {alone.verdict.upper()}" in html
    assert html.count("data:image/png;base64,") == 3  # no weights -> no weight heatmap


def test_warnings_are_shown(full: DiagnoseReport) -> None:
    report = changed(full, warnings=["3 prompts were cut to fit the context"])
    assert "- 3 prompts were cut to fit the context" in render_markdown(report)
    assert "<li>3 prompts were cut to fit the context</li>" in render_html(report, {})


# ---------------------------------------------------------------------------------------------
# plots and terminal


def test_plots_without_base_or_data(alone: DiagnoseReport, repair: RollbackReport) -> None:
    assert sorted(render_plots(alone)) == ["focal_heads.png", "refusal_norm.png", "separation.png"]
    assert render_plots(repair).keys() == {"repair_steps.png"}
    assert render_plots(changed(repair, steps=[])) == {}


def test_plots_are_deterministic(full: DiagnoseReport) -> None:
    assert render_plots(full) == render_plots(full)


@pytest.mark.parametrize(
    ("name", "layer", "kind"),
    [
        ("model.layers.12.self_attn.o_proj", 12, "self_attn.o_proj"),
        ("model.layers.3.mlp.up_proj.weight", 3, "mlp.up_proj"),
        ("transformer.h.1.attn.c_attn", 1, "attn.c_attn"),
        ("model.embed_tokens", None, "model.embed_tokens"),
    ],
)
def test_module_type(name: str, layer: int | None, kind: str) -> None:
    assert module_type(name, layer) == kind


def test_terminal_summary(full: DiagnoseReport, alone: DiagnoseReport) -> None:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    print_summary(full, console)
    out = console.file.getvalue()
    assert f"Verdict: {full.verdict.upper()}" in out
    b = full.behaviour
    rate, base = re.escape(fmt_rate(b.harmful_rate)), re.escape(fmt_rate(b.harmful_rate_base))
    assert re.search(rf"Harmful compliance rate\s*│\s*{rate}\s*│\s*{base}", out)
    assert full.weights is not None
    biggest = max(full.weights.modules, key=lambda m: m.rel_delta or 0.0)
    assert biggest.name in out
    report = changed(alone, model="/m/[bold]x[/bold]", reasons=["[red]not markup[/red]"])
    console = Console(file=io.StringIO(), width=120, color_system=None)
    print_summary(report, console)
    out = console.file.getvalue()
    assert "/m/[bold]x[/bold]" in out and "[red]not markup[/red]" in out


def test_summary_table_numbers_are_rounded_not_truncated(full: DiagnoseReport) -> None:
    report = changed(full, behaviour={**full.behaviour.model_dump(), "harmful_rate": 0.12345})
    rows = {r.label: r.cells for r in summary_table(report).rows}
    assert rows["Harmful compliance rate"][0] == "12.3%"
    titles = [t.title for t in all_tables(report)]
    assert titles == [
        "Summary",
        "Refusal direction per layer",
        "Top 10 changed modules",
        "Harmful compliance by category",
        "Focal attention heads",
        "Focal heads: causal check",
        "Attention drift (heads that moved most)",
        "CRAS (1-5, rule judge)",
        "Causal check",
        "Timings (s)",
    ]
