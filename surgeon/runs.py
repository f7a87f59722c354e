"""Command runs: settings in, outputs written atomically, a report dict and an exit code out.

Each ``run_*`` function is what one CLI command does after parsing; it is also callable from
Python. Outputs follow conventions.md: report.json/md/html, plots, ``config.toml`` (the
effective settings) and ``provenance.json``, written into a temporary sibling of ``--out`` and
renamed into place when complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surgeon.outdir import atomic_output_dir, check_output_target
from surgeon.provenance import provenance, write_config_toml, write_provenance
from surgeon.report import write_report_files
from surgeon.settings import (
    COMMON_DEFAULTS,
    default_out_dir,
    load_options,
    optional_path,
    parse_fail_on,
)

DIAGNOSE_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "harmful": None,
    "harmless": None,
    "over_refusal": None,
    "max_prompts": 128,
    "max_new_tokens": 32,
    "judge": "keyword",
    "fail_on": None,
    "n_causal": 32,
}
"""Settings of ``surgeon diagnose`` (flags and config-file keys) and their defaults."""

EXIT_PASS, EXIT_FAIL = 0, 1


@dataclass(frozen=True)
class RunOutput:
    """What a command run produced."""

    report: dict[str, Any]
    """The report.json object."""
    out_dir: Path
    """Where the files were written."""
    exit_code: int
    """0 pass, 1 the gate failed."""


def _local_inputs(*refs: str | None) -> list[Path]:
    return [Path(r) for r in refs if r is not None and Path(r).exists()]


def write_run_files(
    out_dir: Path,
    report: Mapping[str, Any],
    settings: Mapping[str, Any],
    inputs: Mapping[str, Any],
) -> None:
    """The report files, the effective config and the provenance record into ``out_dir``."""
    write_report_files(report, out_dir)
    write_config_toml({k: v for k, v in settings.items() if v is not None}, out_dir / "config.toml")
    record = provenance(inputs, seeds={"seed": settings.get("seed")})
    write_provenance(record, out_dir / "provenance.json")


def run_diagnose(
    model: str,
    base: str | None,
    settings: Mapping[str, Any],
    out: Path | None = None,
    overwrite: bool = False,
) -> RunOutput:
    """``surgeon diagnose``: audit ``model`` (against ``base``), write the report, gate."""
    from surgeon.diagnosis import DiagnoseConfig, diagnose

    out_dir = out or default_out_dir("diagnose", model)
    protected = _local_inputs(model, base)
    check_output_target(out_dir, overwrite=overwrite, inputs=protected)
    config = DiagnoseConfig(
        harmful=optional_path(settings["harmful"]),
        harmless=optional_path(settings["harmless"]),
        over_refusal=optional_path(settings["over_refusal"]),
        n_max=int(settings["max_prompts"]),
        batch_size=int(settings["batch_size"]),
        max_new_tokens=int(settings["max_new_tokens"]),
        seed=int(settings["seed"]),
        n_causal=int(settings["n_causal"]),
        thresholds=parse_fail_on(settings["fail_on"]),
        load=load_options(settings),
        judge=str(settings["judge"]),
    )
    result = diagnose(model, base=base, config=config)
    report = result.to_json_dict()
    inputs = {
        "model": model,
        "base": report.get("base"),
        "harmful": config.harmful,
        "harmless": config.harmless,
        "over_refusal": config.over_refusal,
    }
    with atomic_output_dir(out_dir, overwrite=overwrite, inputs=protected) as tmp:
        write_run_files(tmp, report, settings, inputs)
    code = EXIT_FAIL if report["verdict"] == "fail" else EXIT_PASS
    return RunOutput(report, out_dir, code)
