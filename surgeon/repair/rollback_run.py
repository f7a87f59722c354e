"""``surgeon repair --method rollback``: what it is told (prompt files, loading, the repair)
and how it runs (registered in :mod:`surgeon.repair.registry`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from surgeon.errors import InputError
from surgeon.load_options import LoadOptions
from surgeon.options import flag, nested
from surgeon.prompts import Prompt, load_prompts
from surgeon.repair.rollback_config import RollbackConfig

if TYPE_CHECKING:
    from surgeon.report.schema import RepairReport


@dataclass(frozen=True)
class RepairFiles:
    """The prompt files a rollback repair reads (each optional)."""

    harmful: Path | None = flag(None)
    """Harmful recovery prompts (default: the bundled set, split into recovery and held-out)."""
    harmful_heldout: Path | None = flag(None)
    """Held-out harmful prompts for the final check."""
    harmless: Path | None = flag(None)
    """Harmless prompts that must stay answered (the over-refusal guard; default: bundled)."""
    task: Path | None = flag(None)
    """Task ``.jsonl`` (``prompt``, ``reference``) for the in-loop task metric (default: the
    likelihood of the model's own answers to the bundled harmless prompts)."""
    task_heldout: Path | None = flag(None)
    """Task prompts for the before/after task metric (default: ``task``)."""


@dataclass(frozen=True)
class Run:
    """The root config of ``surgeon repair --method rollback``."""

    method: ClassVar[str] = "rollback"
    files: RepairFiles = nested(RepairFiles, flags=True)
    """Prompt files."""
    rollback: RollbackConfig = nested(RollbackConfig)
    """The repair itself."""
    load: LoadOptions = nested(LoadOptions, flags=True)
    """Device, dtype, device map, remote code."""


RollbackRun = Run
"""The rollback method's root config, by a name that says so."""


def _prompts(path: Path | None) -> list[Prompt] | None:
    return load_prompts(path) if path is not None else None


def run(model: str, base: str | None, config: Run, work_dir: Path, out_dir: Path) -> RepairReport:
    """Repair ``model`` against ``base`` into ``work_dir``; the report names ``out_dir``."""
    from surgeon.repair.rollback import rollback_repair

    if base is None:
        raise InputError("--method rollback needs --base BASE (the aligned model to restore from)")
    files = config.files
    result = rollback_repair(
        model,
        base,
        work_dir,
        config.rollback,
        harmful=_prompts(files.harmful),
        task=_prompts(files.task),
        held_out_harmful=_prompts(files.harmful_heldout),
        task_heldout=_prompts(files.task_heldout),
        harmless=_prompts(files.harmless),
        options=config.load,
    )
    return result.report(out_dir=str(out_dir))
