"""Command runs: settings in, outputs written atomically, a report dict and an exit code out.

Each ``run_*`` function is what one CLI command does after parsing; it is also callable from
Python. Outputs follow conventions.md: report.json/md/html, plots, ``config.toml`` (the
effective settings) and ``provenance.json``, written into a temporary sibling of ``--out`` and
renamed into place when complete.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


REPAIR_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "method": "rollback",
    "harmful": None,
    "harmful_heldout": None,
    "harmless": None,
    "task": None,
    "task_heldout": None,
    "selection": "task-aware",
    "objective": "answers",
    "layer": None,
    "include_embeddings": False,
    "include_norms": False,
    "prune": True,
    "recovery_rate": None,
    "steps": None,
    "rollback_fraction": None,
    "target_margin": 0.02,
    "task_tolerance": 0.05,
    "task_metric": "auto",
    "n_recovery": 256,
    "n_task": 64,
    "max_new_tokens": 48,
    "task_hold": "on-restart",
    "first_token_share": 0.5,
    "over_refusal_guard": True,
    "over_refusal_check": "generation",
    "over_refusal_margin": 0.05,
    "guard_weight": 1.0,
    "bounded_heap": True,
    "recovery_check_fraction": 0.0,
}
"""Settings of ``surgeon repair`` (flags and config-file keys) and their defaults."""

METHODS = ("rollback", "sail")


def _prompts(value: Any) -> list[Any] | None:
    from surgeon.prompts import load_prompts

    path = optional_path(value)
    return load_prompts(path) if path is not None else None


def _optional(kind: Callable[[Any], Any], value: Any) -> Any:
    """``kind(value)``, or None for None (a default the config resolves itself)."""
    return None if value is None else kind(value)


def rollback_config(settings: Mapping[str, Any]) -> Any:
    """The :class:`RollbackConfig` the settings describe (bad values: InputError)."""
    from surgeon.errors import InputError
    from surgeon.repair import RollbackConfig

    try:
        return RollbackConfig(
            layer=settings["layer"],
            selection=settings["selection"],
            objective=settings["objective"],
            include_embeddings=bool(settings["include_embeddings"]),
            include_norms=bool(settings["include_norms"]),
            prune=bool(settings["prune"]),
            recovery_rate=_optional(float, settings["recovery_rate"]),
            steps=_optional(int, settings["steps"]),
            rollback_fraction=_optional(float, settings["rollback_fraction"]),
            target_margin=float(settings["target_margin"]),
            task_tolerance=float(settings["task_tolerance"]),
            task_metric=settings["task_metric"],
            n_recovery=settings["n_recovery"],
            n_task=settings["n_task"],
            batch_size=int(settings["batch_size"]),
            max_new_tokens=int(settings["max_new_tokens"]),
            seed=int(settings["seed"]),
            task_hold=settings["task_hold"],
            first_token_share=float(settings["first_token_share"]),
            over_refusal_guard=bool(settings["over_refusal_guard"]),
            over_refusal_check=settings["over_refusal_check"],
            over_refusal_margin=float(settings["over_refusal_margin"]),
            guard_weight=float(settings["guard_weight"]),
            bounded_heap=bool(settings["bounded_heap"]),
            recovery_check_fraction=float(settings["recovery_check_fraction"]),
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"repair settings: {exc}") from None


def run_repair(
    model: str,
    base: str | None,
    settings: Mapping[str, Any],
    out: Path,
    overwrite: bool = False,
) -> RunOutput:
    """``surgeon repair --method rollback``: write the repaired model directory and its report."""
    from surgeon.errors import InputError
    from surgeon.repair import rollback_repair
    from surgeon.verdict import decide_repair

    method = settings["method"]
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "sail":
        raise InputError("--method sail is not implemented yet (see the roadmap)")
    if base is None:
        raise InputError("--method rollback needs --base BASE (the aligned model to restore from)")
    protected = _local_inputs(model, base)
    check_output_target(out, overwrite=overwrite, inputs=protected)
    config = rollback_config(settings)
    harmful = _prompts(settings["harmful"])
    held_out = _prompts(settings["harmful_heldout"])
    task = _prompts(settings["task"])
    task_heldout = _prompts(settings["task_heldout"])
    harmless = _prompts(settings["harmless"])
    with atomic_output_dir(out, overwrite=overwrite, inputs=protected) as tmp:
        result = rollback_repair(
            model,
            base,
            tmp,
            config,
            harmful=harmful,
            task=task,
            held_out_harmful=held_out,
            task_heldout=task_heldout,
            harmless=harmless,
            options=load_options(settings),
        )
        report = result.to_json_dict()
        report["out_dir"] = str(out)
        gate = decide_repair(
            harmful_after=result.harmful_rate_after,
            harmful_base=result.harmful_rate_base,
            task_after=result.task_metric_after,
            task_before=result.task_metric_before,
            task_tolerance=config.task_tolerance,
            over_refusal_after=result.over_refusal_after,
            over_refusal_base=result.over_refusal_base,
        )
        report["verdict"], report["reasons"] = gate.verdict, gate.reasons
        inputs = {
            "model": model,
            "base": base,
            "harmful": settings["harmful"],
            "harmless": settings["harmless"],
            "task": settings["task"],
        }
        write_run_files(tmp, report, settings, inputs)
    return RunOutput(report, out, EXIT_FAIL if gate.verdict == "fail" else EXIT_PASS)


def run_apply_mask(
    model: str,
    base: str | None,
    mask: Path,
    settings: Mapping[str, Any],
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
    protected = _local_inputs(model, base, str(mask.parent))
    check_output_target(out, overwrite=overwrite, inputs=protected)
    with atomic_output_dir(out, overwrite=overwrite, inputs=protected) as tmp:
        apply_mask(model, base, mask, tmp, options=load_options(settings))
    return out
