"""Progress bars that show on a terminal and stay quiet in scripts, CI and ``--json`` mode."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence every progress bar (``--json`` mode)."""
    global _QUIET
    _QUIET = quiet


def enabled() -> bool:
    """Bars show only on an interactive stderr and never when quiet or ``SURGEON_QUIET`` is set."""
    return not _QUIET and not os.environ.get("SURGEON_QUIET") and sys.stderr.isatty()


def sync_library_bars() -> None:
    """Make transformers' own bars (loading, saving) follow :func:`enabled`."""
    from transformers.utils import logging as hf_logging

    if enabled():
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Wrap an iterable in a progress bar when progress is enabled."""
    if not enabled():
        yield from items
        return
    yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
