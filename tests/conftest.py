"""Shared fixtures: the model organism (built once per test session and cached on disk) and
reports produced by the code itself on tiny models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.organisms import bpe_s_organism  # noqa: F401  (session fixture: bpe-s-tiny)

REPO = Path(__file__).resolve().parent.parent

# every report.json a test writes (in this process or a subprocess) is validated against the
# JSON Schema shipped in the package (surgeon/report/write.py)
os.environ["SURGEON_STRICT_REPORTS"] = "1"
# GGUF conversions (surgeon/gguf.py) go to the repository's cache, never to ~/.cache
os.environ.setdefault("SURGEON_GGUF_CACHE", str(REPO / ".surgeon-cache" / "gguf"))


@pytest.fixture(scope="session")
def organism_dir() -> Path:
    """A complete organism: ``$SURGEON_ORGANISM_DIR`` or ``<repo>/.surgeon-cache/organism``."""
    from surgeon.organism import ensure_organism

    env = os.environ.get("SURGEON_ORGANISM_DIR")
    cache = Path(env) if env else REPO / ".surgeon-cache" / "organism"
    return ensure_organism(cache)


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Tiny matrices run fastest on one thread, above all on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Reports written by the real code on a tiny Llama pair: ``diagnose`` (against the base),
    ``alone`` (no base) and ``repair`` (a two-step rollback)."""
    from tests.report_runs import report_pair, tiny_runs

    root = tmp_path_factory.mktemp("reports")
    return tiny_runs(report_pair(root), root)
