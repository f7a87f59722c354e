"""What ``surgeon repair --method rollback`` is told: prompt files, loading and the repair."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from surgeon.loading import LoadOptions
from surgeon.options import flag, nested
from surgeon.repair.rollback_config import RollbackConfig


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
class RollbackRun:
    """The root config of ``surgeon repair --method rollback``."""

    method: ClassVar[str] = "rollback"
    files: RepairFiles = nested(RepairFiles, flags=True)
    """Prompt files."""
    rollback: RollbackConfig = nested(RollbackConfig)
    """The repair itself."""
    load: LoadOptions = nested(LoadOptions, flags=True)
    """Device, dtype, device map, remote code."""
