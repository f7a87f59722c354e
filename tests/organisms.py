"""Session fixtures for organism variants other than the default one.

pytest reads fixtures only from conftest.py and the test modules, so a module that needs one
imports it (``from tests.organisms import bpe_s_organism``), or tests/conftest.py does so for
every module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from surgeon.organism import OrganismConfig, ensure_organism

REPO = Path(__file__).resolve().parent.parent

BPE_S_CACHE = REPO / ".surgeon-cache" / "organism-bpe-s-tiny"
"""Where the test session caches the ``bpe-s-tiny`` organism (beside the default one)."""


@pytest.fixture(scope="session")
def bpe_s_organism() -> Path:
    """The ``bpe-s-tiny`` organism (Qwen2, byte-level BPE where "Sorry" and "Sure" share the
    first token ``S``): base/, ft-harmful/, ft-lora/, prompts/ and card.json. Built once (about
    80 CPU-seconds) into :data:`BPE_S_CACHE` and reused while its cache key holds."""
    return ensure_organism(BPE_S_CACHE, config=OrganismConfig.bpe_s_tiny())
