"""The repair methods ``surgeon repair --method NAME`` runs: one line per method.

Each entry names a module that defines ``Run``, the method's root config (a frozen dataclass
whose options become the command's settings, with a ``method`` class variable), and
``run(model, base, config, work_dir, out_dir) -> report``, which writes the repaired model into
``work_dir`` (the temporary directory that becomes ``out_dir``) and returns the typed report.
Modules are imported only when used, so the command line starts fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from surgeon.report.schema import RepairReport

METHODS: dict[str, str] = {
    "rollback": "surgeon.repair.rollback_run",
    "sail": "surgeon.repair.sail_run",
}
"""Method name -> the module that implements it."""

PLANNED: tuple[str, ...] = ()
"""Methods the command line names that are not built yet."""


class RepairMethod(Protocol):
    """What a method module provides."""

    Run: type
    """The method's root config."""

    def run(
        self, model: str, base: str | None, config: Any, work_dir: Path, out_dir: Path
    ) -> RepairReport:
        """Repair ``model`` into ``work_dir`` and return the typed report."""


def method(name: str) -> RepairMethod:
    """The module of repair method ``name``."""
    return importlib.import_module(METHODS[name])  # type: ignore[return-value]
