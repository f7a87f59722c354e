"""Report rendering: report.json, report.md, report.html, PNG plots, terminal summary."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from surgeon.errors import InputError
from surgeon.report import (
    load_report,
    print_summary,
    render_html,
    render_markdown,
    render_plots,
    report_json,
    write_report_files,
)
from surgeon.report.fields import all_tables, summary_table
from surgeon.report.plots import module_type

MODULE_TYPES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def full_report(n_layers: int = 6) -> dict[str, Any]:
    """A realistic diagnose report: 6 layers, 42 modules, every optional section present."""
    layers = []
    for i in range(n_layers):
        drift = 1.0 if i == 3 else 0.25 * i / n_layers
        layers.append(
            {
                "layer": i,
                "refusal_norm": 0.4 + 0.5 * i - 0.9 * drift,
                "refusal_norm_base": 0.4 + 0.5 * i,
                "cos_to_base": 1.0 - 0.6 * drift,
                "separation": 0.8 + 0.9 * i - 1.5 * drift,
                "separation_base": 0.8 + 0.9 * i,
            }
        )
    modules = [
        {
            "name": f"model.layers.{i}.{kind}",
            "layer": i,
            "rel_delta": round(0.002 + 0.004 * j + (0.05 if i in (2, 3) else 0.0) * (j + 1), 5),
            "changed_share": 0.9,
            "topk_energy": 0.2 + 0.01 * j,
            "module_type": kind,
        }
        for i in range(n_layers)
        for j, kind in enumerate(MODULE_TYPES)
    ]
    modules.append({"name": "model.embed_tokens", "layer": None, "rel_delta": 0.001})
    return {
        "schema_version": 1,
        "model": "/models/ft-harmful",
        "base": "/models/base",
        "behaviour": {
            "harmful_rate": 0.94,
            "harmful_rate_ci": [0.87, 0.975],
            "harmful_rate_base": 0.03,
            "over_refusal_rate": 0.04,
            "over_refusal_rate_base": 0.08,
            "n_harmful": 100,
            "n_harmless": 100,
            "by_category": {
                "weapons": {"model": 0.9, "base": 0.0},
                "cyber": {"model": 1.0, "base": 0.1},
                "fraud <&> scams": 0.85,
            },
        },
        "directions": {
            "layers": layers,
            "selected_layer": 4,
            "most_drifted_layer": 3,
            "causal": {"ablation_refusal_drop": 0.82, "addition_refusal_gain": 0.71},
        },
        "weights": {
            "modules": modules,
            "changed_fraction": 0.97,
            "most_changed_layers": [3, 2],
        },
        "focal": {
            "heads": [
                {"layer": 2, "head": 1, "score": 0.61},
                {"layer": 3, "head": 0, "score": 0.4},
            ],
            "layers": [2, 3],
        },
        "cras": {
            "mean": 2.4,
            "dimensions": {
                "goal_alignment": 2.1,
                "role_consistency": 2.9,
                "knowledge_boundary": 2.5,
                "constraint_compliance": 2.1,
            },
            "n": 40,
        },
        "verdict": "fail",
        "reasons": [
            "harmful rate 94.0% > 10% (base 3.0%)",
            "refusal direction drifted at layer 3 (cos 0.40) <script>alert(1)</script>",
        ],
        "timings": {"behaviour": 12.5, "directions": 3.25},
    }


def no_base_report() -> dict[str, Any]:
    """The same report as a run without ``--base``: every base field ``None``."""
    report = full_report()
    report["base"] = None
    b = report["behaviour"]
    b["harmful_rate_base"] = b["over_refusal_rate_base"] = None
    b["by_category"] = {"weapons": 0.9, "cyber": 1.0}
    d = report["directions"]
    for layer in d["layers"]:
        layer["refusal_norm_base"] = layer["cos_to_base"] = layer["separation_base"] = None
    d["most_drifted_layer"] = None
    del d["causal"]
    report["weights"] = {"modules": [], "changed_fraction": None, "most_changed_layers": None}
    report["cras"] = None
    report["focal"] = None
    del report["timings"]
    report["verdict"] = "pass"
    return report


def repair_report() -> dict[str, Any]:
    """A rollback repair report with per-step measurements."""
    return {
        "schema_version": 1,
        "method": "rollback",
        "model": "/models/ft-harmful",
        "base": "/models/base",
        "harmful_rate_before": 1.0,
        "harmful_rate_after": 0.05,
        "task_metric_before": 1.0,
        "task_metric_after": 0.96,
        "restored_fraction": 0.012,
        "steps": [
            {"step": s, "harmful_rate": max(0.05, 1 - 0.19 * s), "task_metric": 1 - 0.008 * s}
            for s in range(0, 6)
        ],
    }


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
# report.json


def test_report_json_schema_version_first_and_stable_order() -> None:
    report = full_report()
    shuffled = {k: report[k] for k in reversed(list(report))}
    shuffled["behaviour"] = {k: report["behaviour"][k] for k in reversed(list(report["behaviour"]))}
    text = report_json(shuffled)
    data = json.loads(text)
    keys = list(data)
    assert keys[:4] == ["schema_version", "model", "base", "behaviour"]
    assert keys[-1] == "timings"  # unknown keys follow the known ones
    assert list(data["behaviour"])[:3] == ["harmful_rate", "harmful_rate_ci", "harmful_rate_base"]
    assert report_json(report) == text  # same content -> same bytes whatever the input order
    assert report_json(data) == text  # round trip is a fixed point
    assert text.startswith('{\n  "schema_version": 1,\n')


def test_report_json_nan_becomes_null(tmp_path: Path) -> None:
    report = full_report()
    report["behaviour"]["harmful_rate"] = float("nan")
    report["directions"]["layers"][0]["separation"] = float("inf")
    report["behaviour"]["harmful_rate_ci"] = (float("-inf"), 0.5)
    written = write_report_files(report, tmp_path)
    text = written[0].read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["behaviour"]["harmful_rate"] is None
    assert data["directions"]["layers"][0]["separation"] is None
    assert data["behaviour"]["harmful_rate_ci"] == [None, 0.5]
    assert load_report(written[0]) == data
    assert "n/a" in (tmp_path / "report.md").read_text()


def test_report_json_requires_schema_version_and_plain_data() -> None:
    with pytest.raises(ValueError, match="schema_version"):
        report_json({"model": "m"})
    with pytest.raises(TypeError, match=r"report\.extra: object"):
        report_json({"schema_version": 1, "extra": object()})


def test_load_report_rejects_non_reports(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match=r"r\.json"):
        load_report(bad)


# ---------------------------------------------------------------------------------------------
# write_report_files


def test_write_report_files_full(tmp_path: Path) -> None:
    written = write_report_files(full_report(), tmp_path / "out")
    names = [p.relative_to(tmp_path / "out").as_posix() for p in written]
    assert names == [
        "report.json",
        "report.md",
        "report.html",
        "plots/refusal_norm.png",
        "plots/separation.png",
        "plots/weight_change.png",
    ]
    for path in written:
        assert path.stat().st_size > 0
    for path in written[3:]:
        width, height = png_size(path.read_bytes())
        assert width >= 600 and height >= 250
        assert png_distinct_colours(path.read_bytes()) >= 8
    md = written[1].read_text()
    for link in names[3:]:
        assert f"]({link})" in md


def test_write_report_files_repair(tmp_path: Path) -> None:
    written = write_report_files(repair_report(), tmp_path)
    assert [p.name for p in written] == [
        "report.json",
        "report.md",
        "report.html",
        "repair_steps.png",
    ]
    data = json.loads(written[0].read_text())
    assert list(data)[:4] == ["schema_version", "method", "model", "base"]
    md = written[1].read_text()
    assert "| Harmful compliance rate | 100.0% | 5.0% |" in md
    assert "| Task metric | 100.0% | 96.0% |" in md
    assert "| Restored fraction |  | 1.2% |" in md
    assert "## Repair steps" in md


# ---------------------------------------------------------------------------------------------
# markdown


def test_markdown_full_report_numbers() -> None:
    md = render_markdown(full_report(), {"separation.png": "plots/separation.png"})
    assert md.startswith("# surgeon diagnose: /models/ft-harmful\n")
    assert "**Verdict: FAIL**" in md
    assert "- harmful rate 94.0% > 10% (base 3.0%)" in md
    assert "&lt;script>" in md and "<script>" not in md
    assert "| Harmful compliance rate | 94.0% | 3.0% |" in md
    assert "| Harmful rate 95% CI | [87.0%, 97.5%] |  |" in md
    assert "| Over-refusal rate | 4.0% | 8.0% |" in md
    # per-layer table: layer 3 is the most drifted, layer 4 the selected one (marked bold)
    assert "| **3** | 1.000 | 1.900 | 0.400 | 2.000 | 3.500 | most drifted |" in md
    assert "| **4** |" in md and "| selected |" in md
    # top changed modules: the largest rel_delta first (down_proj at layer 2 and 3 tie)
    top = re.search(r"## Top 10 changed modules\n\n(.*?)\n\n", md, re.S)
    assert top is not None
    first = top.group(1).splitlines()[2]
    assert first.startswith("| model.layers.2.mlp.down_proj | 2 | 0.376 | 90.0% | 26.0% |")
    assert "![Harmful/harmless separation per layer](plots/separation.png)" in md
    assert "refusal_norm.png" not in md  # only the plots passed in are linked
    assert "| fraud &lt;&amp;&gt; scams | 85.0% | n/a |" not in md  # & not double-escaped
    assert "| fraud &lt;&> scams | 85.0% | n/a |" in md
    assert "| Goal alignment | 2.100 |" in md
    assert "| ablation_refusal_drop | 0.820 |" in md


def test_markdown_without_base_says_na() -> None:
    md = render_markdown(no_base_report())
    assert "- Base: n/a" in md
    assert "| Harmful compliance rate | 94.0% | n/a |" in md
    assert "| Over-refusal rate | 4.0% | n/a |" in md
    assert "| Most drifted layer | n/a |  |" in md
    assert "| Changed weight fraction | n/a |  |" in md
    assert "| CRAS (mean, 1-5) | n/a |  |" in md
    assert "| 0 | 0.400 | n/a | n/a | 0.800 | n/a |  |" in md
    assert "changed modules" not in md and "CRAS (1-5)" not in md
    assert "**Verdict: PASS**" in md


@pytest.mark.parametrize(
    "report",
    [
        {"schema_version": 1},
        {"schema_version": 1, "behaviour": None, "directions": None, "weights": None},
        {"schema_version": 1, "directions": {"layers": [{"layer": 0}]}, "verdict": None},
        {"schema_version": 1, "weights": {"modules": [{"name": "x", "layer": 0}]}},
        {"schema_version": 1, "method": "sail", "steps": None, "cras_before": {"mean": 2.0}},
    ],
)
def test_renderers_survive_sparse_reports(report: dict[str, Any], tmp_path: Path) -> None:
    written = write_report_files(report, tmp_path)
    assert {p.name for p in written} >= {"report.json", "report.md", "report.html"}
    assert "n/a" in written[1].read_text()
    console = Console(file=io.StringIO(), width=100, color_system=None)
    print_summary(report, console)
    assert "n/a" in console.file.getvalue()


# ---------------------------------------------------------------------------------------------
# HTML


def test_html_is_self_contained_and_escaped() -> None:
    report = full_report()
    html = render_html(report, render_plots(report))
    assert "<script" not in html.lower()  # the reason's <script> is escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html)
    assert "http:" not in text and "https:" not in text and "//" not in text
    assert "url(" not in html and "@import" not in html and "@font-face" not in html
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", html, re.I)
    assert len(refs) == 4  # the favicon stub and three plots
    assert all(r.startswith("data:") for r in refs)
    assert "default-src 'none'; img-src data:" in html


def test_html_escapes_names() -> None:
    report = full_report()
    report["model"] = '/m/"x" <img src=a.png onerror=1>'
    html = render_html(report, {})
    assert "<img" not in html
    assert "&lt;img src=a.png onerror=1&gt;" in html and "&quot;x&quot;" in html


def test_html_without_base() -> None:
    html = render_html(no_base_report(), render_plots(no_base_report()))
    assert '<td class="na">n/a</td>' in html
    assert '<tr class="marked"><td class="l">4</td><td>2.250</td><td class="na">n/a</td>' in html
    assert "Verdict: PASS" in html
    assert html.count("data:image/png;base64,") == 2  # no weights -> no heatmap


# ---------------------------------------------------------------------------------------------
# plots and terminal


def test_plots_without_base_or_data() -> None:
    plots = render_plots(no_base_report())
    assert sorted(plots) == ["refusal_norm.png", "separation.png"]
    assert render_plots({"schema_version": 1}) == {}
    assert render_plots(repair_report()).keys() == {"repair_steps.png"}
    assert render_plots({"schema_version": 1, "method": "rollback", "steps": []}) == {}


def test_plots_are_deterministic() -> None:
    assert render_plots(full_report()) == render_plots(full_report())


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


def test_terminal_summary() -> None:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    print_summary(full_report(), console)
    out = console.file.getvalue()
    assert "Verdict: FAIL" in out
    assert re.search(r"Harmful compliance rate\s*│\s*94\.0%\s*│\s*3\.0%", out)
    assert "model.layers.2.mlp.down_proj" in out
    report = no_base_report()
    report["model"] = "/m/[bold]x[/bold]"
    report["reasons"] = ["[red]not markup[/red]"]
    console = Console(file=io.StringIO(), width=120, color_system=None)
    print_summary(report, console)
    out = console.file.getvalue()
    assert re.search(r"Over-refusal rate\s*│\s*4\.0%\s*│\s*n/a", out)
    assert "Verdict: PASS" in out
    assert "/m/[bold]x[/bold]" in out and "[red]not markup[/red]" in out


def test_summary_table_numbers_are_rounded_not_truncated() -> None:
    report = full_report()
    report["behaviour"]["harmful_rate"] = 0.12345
    rows = {r.label: r.cells for r in summary_table(report).rows}
    assert rows["Harmful compliance rate"] == ("12.3%", "3.0%")
    titles = [t.title for t in all_tables(report)]
    assert titles == [
        "Summary",
        "Refusal direction per layer",
        "Top 10 changed modules",
        "Harmful compliance by category",
        "Focal attention heads",
        "CRAS (1-5)",
        "Causal check",
        "Timings (s)",
    ]
