"""Repairs of fine-tuned models. Rollback: restore a few entries from the aligned base."""

from surgeon.repair.mask import MASK_NAME, RollbackMask, apply_mask, load_mask, save_mask
from surgeon.repair.report import RollbackResult, StepRecord
from surgeon.repair.rollback import eligible_parameters, rollback_repair
from surgeon.repair.rollback_config import RollbackConfig
from surgeon.repair.selection import restore, select_entries

__all__ = [
    "MASK_NAME",
    "RollbackConfig",
    "RollbackMask",
    "RollbackResult",
    "StepRecord",
    "apply_mask",
    "eligible_parameters",
    "load_mask",
    "restore",
    "rollback_repair",
    "save_mask",
    "select_entries",
]
