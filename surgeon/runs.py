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
from typing import TYPE_CHECKING, Any

from surgeon.options import flat_values
from surgeon.outdir import atomic_output_dir, check_output_target
from surgeon.provenance import provenance, write_config_toml, write_provenance
from surgeon.report import write_report_files
from surgeon.report.schema import Report
from surgeon.settings import default_out_dir, effective_settings

if TYPE_CHECKING:
    from surgeon.diagnosis import DiagnoseConfig
    from surgeon.loading import LoadOptions

EXIT_PASS, EXIT_FAIL = 0, 1


@dataclass(frozen=True)
class RunOutput:
    """What a command run produced."""

    report: Report
    """The typed report (report.json)."""
    out_dir: Path
    """Where the files were written."""
    exit_code: int
    """0 pass, 1 the gate failed."""


def _local_inputs(
    model: str, base: str | None, *files: Path, gguf_file: str | None = None
) -> list[Path]:
    """Every local directory the run reads (an adapter's recorded base included; a GGUF
    file's converted directory), and ``files``' directories: ``--out`` may lie inside none of
    them."""
    from surgeon.loading import input_dirs

    dirs = [
        *input_dirs(model, base, gguf_file),
        *(input_dirs(base, None, gguf_file) if base else ()),
    ]
    return [*dirs, *(f.parent for f in files)]


def write_run_files(
    out_dir: Path, report: Report, config: Any, inputs: Mapping[str, Any], seed: int
) -> None:
    """The report files, the effective config and the provenance record into ``out_dir``."""
    write_report_files(report, out_dir)
    write_config_toml(effective_settings(config), out_dir / "config.toml")
    record = provenance(inputs, seeds={"seed": seed})
    write_provenance(record, out_dir / "provenance.json")


def run_diagnose(
    model: str,
    base: str | None,
    config: DiagnoseConfig,
    out: Path | None = None,
    overwrite: bool = False,
) -> RunOutput:
    """``surgeon diagnose``: audit ``model`` (against ``base``), write the report, gate."""
    from surgeon.diagnosis import diagnose

    out_dir = out or default_out_dir("diagnose", model)
    protected = _local_inputs(model, base, gguf_file=config.load.gguf_file)
    check_output_target(out_dir, overwrite=overwrite, inputs=protected)
    report = diagnose(model, base=base, config=config).report()
    inputs = {
        "model": model,
        "base": report.base,
        "harmful": config.harmful,
        "harmless": config.harmless,
        "over_refusal": config.over_refusal,
    }
    with atomic_output_dir(out_dir, overwrite=overwrite, inputs=protected) as tmp:
        write_run_files(tmp, report, config, inputs, config.seed)
    return RunOutput(report, out_dir, EXIT_FAIL if report.verdict == "fail" else EXIT_PASS)


def run_repair(
    model: str,
    base: str | None,
    config: Any,
    out: Path,
    overwrite: bool = False,
) -> RunOutput:
    """``surgeon repair``: the method of ``config`` (a registered method's root config) writes
    the repaired model into ``out`` atomically, with its report files."""
    from surgeon.repair.registry import method

    load = getattr(config, "load", None)
    protected = _local_inputs(model, base, gguf_file=getattr(load, "gguf_file", None))
    check_output_target(out, overwrite=overwrite, inputs=protected)
    with atomic_output_dir(out, overwrite=overwrite, inputs=protected) as tmp:
        report = method(config.method).run(model, base, config, tmp, out)
        files = {k: v for k, v in flat_values(config).items() if isinstance(v, Path)}
        inputs = {"model": model, "base": base, **files}
        write_run_files(tmp, report, config, inputs, flat_values(config).get("seed", 0))
    return RunOutput(report, out, EXIT_FAIL if report.verdict == "fail" else EXIT_PASS)


def run_apply_mask(
    model: str,
    base: str | None,
    mask: Path,
    options: LoadOptions,
    out: Path,
    overwrite: bool = False,
) -> Path:
    """``surgeon repair --apply-mask``: re-apply a saved rollback mask to ``model``."""
    from surgeon.errors import InputError
    from surgeon.repair import apply_mask

    if base is None:
        raise InputError("--apply-mask needs --base BASE (the values the mask restores)")
    if not mask.is_file():
        raise InputError(f"{mask}: no such rollback mask file")
    protected = _local_inputs(model, base, mask, gguf_file=options.gguf_file)
    check_output_target(out, overwrite=overwrite, inputs=protected)
    with atomic_output_dir(out, overwrite=overwrite, inputs=protected) as tmp:
        apply_mask(model, base, mask, tmp, options=options)
    return out
