"""Find or build the organism in a cache directory, atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from surgeon.errors import InputError
from surgeon.organism import numerics
from surgeon.organism.build import build_organism, set_adapter_base
from surgeon.organism.config import ORGANISM_VERSION, OrganismConfig

ENV_VAR = "SURGEON_ORGANISM_DIR"
"""Environment variable naming the organism cache directory."""


def default_cache_dir(config: OrganismConfig | None = None) -> Path:
    """``$SURGEON_ORGANISM_DIR`` if set, else ``~/.cache/surgeon/organism-v<version>``.

    Any other ``config`` than the default lives beside it, in ``<that path>-<cache key>``, so
    building a variant never replaces the default organism.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
    else:
        path = Path.home() / ".cache" / "surgeon" / f"organism-v{ORGANISM_VERSION}"
    if config is not None and config.cache_key() != OrganismConfig().cache_key():
        path = path.with_name(f"{path.name}-{config.cache_key()}")
    return path


def is_complete(path: Path, config: OrganismConfig) -> bool:
    """True when ``path`` holds a finished organism built with ``config`` and the kernels a
    build here uses (card.json is last)."""
    card_path = path / "card.json"
    if not card_path.is_file():
        return False
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if card.get("version") != ORGANISM_VERSION or card.get("cache_key") != config.cache_key():
        return False
    if card.get("numerics") != numerics.expected():
        return False
    return all((path / v).is_dir() for v in config.variants) and (path / "prompts").is_dir()


def relink_adapter(path: Path) -> None:
    """Point ft-lora at this directory's base/ (the organism may have been moved or copied)."""
    cfg_path = path / "ft-lora" / "adapter_config.json"
    if not cfg_path.is_file():
        return
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if Path(cfg.get("base_model_name_or_path", "")) != (path / "base").resolve():
        set_adapter_base(path / "ft-lora", path / "base")


def ensure_organism(
    cache_dir: Path | None = None,
    rebuild: bool = False,
    config: OrganismConfig | None = None,
) -> Path:
    """Return a directory holding a complete organism, building it when needed.

    A finished organism with the same version and config is reused. Otherwise it is built in
    a temporary sibling and renamed into place. An existing directory that is not an organism
    (no card.json) is never overwritten: :class:`InputError`. ``rebuild`` replaces an existing
    organism (one with a card.json).
    """
    config = config or OrganismConfig()
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(config)
    path = path.absolute()
    if not rebuild and is_complete(path, config):
        relink_adapter(path)
        return path
    refuse_foreign(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(path):
        # another process may have built it while this one waited
        if not rebuild and is_complete(path, config):
            relink_adapter(path)
            return path
        return _build(path, config)


def refuse_foreign(path: Path) -> None:
    """An existing directory that is not an organism (no card.json) is never overwritten."""
    if path.exists() and any(path.iterdir()) and not (path / "card.json").is_file():
        raise InputError(
            f"{path}: exists and is not a surgeon organism (no card.json); "
            "refusing to overwrite it; choose another directory or remove it"
        )


@contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for ``path`` (no-op without fcntl), so two processes asking for
    the same organism build it once. The lock file lives in the temporary directory, named by
    a hash of the path, so nothing is left beside the organism."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"surgeon-organism-{key}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(path: Path, config: OrganismConfig) -> Path:
    """Build into a temporary sibling and rename it into place, with pinned kernels (in a
    child process where this one's are wider)."""

    def build(tmp: Path) -> None:
        if numerics.needs_child():
            numerics.build_in_child(tmp, config, path)
        else:
            build_organism(tmp, config, final_dir=path)

    return build_atomically(path, build)


def build_atomically(path: Path, builder: Callable[[Path], object]) -> Path:
    """Run ``builder(tmp)`` on a temporary sibling of ``path`` and rename it into place (an
    existing organism is replaced only once the new one is complete)."""
    refuse_foreign(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.building-", dir=path.parent))
    try:
        builder(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / "organism")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
