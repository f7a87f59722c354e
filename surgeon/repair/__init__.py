"""Repairs of fine-tuned models, one module per method (see :mod:`surgeon.repair.registry`).

Rollback: restore a few entries from the aligned base. Names load lazily, so importing the
registry (the command line does) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MASK_NAME": "surgeon.repair.mask",
    "RollbackMask": "surgeon.repair.mask",
    "apply_mask": "surgeon.repair.mask",
    "load_mask": "surgeon.repair.mask",
    "save_mask": "surgeon.repair.mask",
    "RollbackResult": "surgeon.repair.report",
    "StepRecord": "surgeon.repair.report",
    "eligible_parameters": "surgeon.repair.rollback_work",
    "rollback_repair": "surgeon.repair.rollback",
    "RollbackConfig": "surgeon.repair.rollback_config",
    "restore": "surgeon.repair.selection",
    "select_entries": "surgeon.repair.selection",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'surgeon.repair' has no attribute {name!r}")
