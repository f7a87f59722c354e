"""The model organism: a tiny aligned chat model and broken fine-tunes of it, built on CPU.

``ensure_organism()`` returns a directory with ``base/``, ``ft-harmful/``, ``ft-benign/``,
``ft-lora/`` (a PEFT adapter on ``base/``), ``ft-conflict/``, ``prompts/`` and ``card.json``;
``OrganismConfig`` selects the architecture, tokenizer and phrasing of variants such as
``bpe-s`` (:data:`PRESETS`).
"""

from surgeon.organism.build import VARIANTS, OrganismCard, build_organism
from surgeon.organism.cache import default_cache_dir, ensure_organism, is_complete
from surgeon.organism.config import (
    ORGANISM_VERSION,
    PRESETS,
    OrganismConfig,
    StageConfig,
    preset_config,
)

__all__ = [
    "ORGANISM_VERSION",
    "PRESETS",
    "VARIANTS",
    "OrganismCard",
    "OrganismConfig",
    "StageConfig",
    "build_organism",
    "default_cache_dir",
    "ensure_organism",
    "is_complete",
    "preset_config",
]
