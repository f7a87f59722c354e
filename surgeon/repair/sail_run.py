"""``surgeon repair --method sail``: what it is told (prompt and preference files, loading, the
repair) and how it runs (registered in :mod:`surgeon.repair.registry`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from surgeon.load_options import LoadOptions
from surgeon.options import flag, nested
from surgeon.prompts import Prompt, load_prompts
from surgeon.repair.sail_config import SailConfig

if TYPE_CHECKING:
    from surgeon.report.schema import RepairReport


@dataclass(frozen=True)
class SailFiles:
    """The files a SAIL repair reads (each optional)."""

    preferences: Path | None = flag(None)
    """Preference pairs ``.jsonl`` (``system``?, ``prompt``, ``chosen``, ``rejected``) instead
    of pairs built from the conflict set's training split (or, with ``--target harmful``, from
    the harmful recovery prompts)."""
    conflicts: Path | None = flag(None)
    """Conflicts ``.jsonl`` (split into training and held-out unless ``--conflicts-heldout``),
    or a model organism's ``prompts/`` directory (its train and held-out splits); default:
    the bundled set."""
    conflicts_heldout: Path | None = flag(None)
    """Held-out conflicts ``.jsonl`` for the before/after measurement."""
    harmful: Path | None = flag(None)
    """Harmful prompts: held-out harm is measured on them (``--target harmful``: split into
    recovery and held-out); default: the bundled set."""
    harmful_heldout: Path | None = flag(None)
    """Held-out harmful prompts for the final check."""
    harmless: Path | None = flag(None)
    """Harmless prompts whose refusal is over-refusal (default: bundled)."""
    harmless_train: Path | None = flag(None)
    """``--target harmful``: harmless prompts of the guard pairs (chosen = the model's answer,
    rejected = a refusal); default: a share of the harmless prompts, apart from those measured."""
    task: Path | None = flag(None)
    """Task ``.jsonl`` (``prompt``, ``reference``) for a before/after task metric."""


@dataclass(frozen=True)
class Run:
    """The root config of ``surgeon repair --method sail``."""

    method: ClassVar[str] = "sail"
    files: SailFiles = nested(SailFiles, flags=True)
    """Prompt and preference files."""
    sail: SailConfig = nested(SailConfig)
    """The repair itself."""
    load: LoadOptions = nested(LoadOptions, flags=True)
    """Device, dtype, device map, remote code."""


SailRun = Run
"""The SAIL method's root config, by a name that says so."""


def _prompts(path: Path | None) -> list[Prompt] | None:
    return load_prompts(path) if path is not None else None


def run(model: str, base: str | None, config: Run, work_dir: Path, out_dir: Path) -> RepairReport:
    """Repair ``model`` (against ``base``, optional) into ``work_dir``; the report names
    ``out_dir``."""
    from surgeon.conflicts import read_conflict_source
    from surgeon.repair.sail import sail_repair
    from surgeon.repair.sail_data import load_preferences

    files = config.files
    conflicts = heldout = None
    if files.conflicts is not None:
        conflicts, heldout = read_conflict_source(files.conflicts)
    if files.conflicts_heldout is not None:
        from surgeon.conflicts import load_conflicts

        heldout = load_conflicts(files.conflicts_heldout)
    preferences = load_preferences(files.preferences) if files.preferences else None
    result = sail_repair(
        model,
        base,
        work_dir,
        config.sail,
        conflicts=conflicts,
        conflicts_heldout=heldout,
        preferences=preferences,
        preferences_file=str(files.preferences) if files.preferences else None,
        harmful=_prompts(files.harmful),
        harmful_heldout=_prompts(files.harmful_heldout),
        harmless=_prompts(files.harmless),
        harmless_train=_prompts(files.harmless_train),
        task=_prompts(files.task),
        options=config.load,
    )
    return result.report(out_dir=str(out_dir))
