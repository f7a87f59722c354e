"""Atomic output directories: write everything into a temporary sibling, rename when done.

A run that fails half-way leaves no partial output behind and never touches an existing
result; an existing non-empty directory is only replaced when the caller asks to overwrite,
and surgeon never writes into (or over) one of its input directories.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from surgeon.errors import InputError


def _exists(path: Path, target: Path) -> bool:
    try:
        return path.exists()
    except OSError as exc:
        raise InputError(f"{target}: cannot access {path} ({exc.strerror or exc})") from None


def check_writable(target: Path) -> Path:
    """``target`` resolved, after proving that a directory can be created there.

    Raises :class:`InputError` when the path holds a null byte, exists and is not a directory,
    has a file where a parent directory should be, or lies where this process cannot create
    a directory. The last is tried, not read from the permission bits (which do not bind
    root): a probe directory is made and removed beside where the output will go, in the
    nearest existing parent. Nothing else is written.
    """
    text = str(target)
    if "\0" in text:
        raise InputError(f"{text!r}: output path contains an embedded null byte")
    try:
        resolved = Path(target).expanduser().resolve()
    except (OSError, RuntimeError) as exc:
        raise InputError(f"{target}: not a usable output path ({exc})") from None
    if _exists(resolved, target) and not resolved.is_dir():
        raise InputError(f"{target}: exists and is not a directory")
    parent = resolved.parent
    while not _exists(parent, target):
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{target}: cannot create it, {parent} is a file, not a directory")
    name = resolved.relative_to(parent).parts[0]  # the first directory the run will create
    probe = parent / f".{name}.probe-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
    except OSError as exc:
        raise InputError(
            f"{target}: cannot create the output directory in {parent} ({exc.strerror or exc})"
        ) from None
    probe.rmdir()
    return resolved


def check_output_target(
    target: Path, *, overwrite: bool = False, inputs: Sequence[Path] = ()
) -> Path:
    """``target`` resolved, after checking that surgeon may and can write there.

    Raises :class:`InputError` when ``target`` is not writable (:func:`check_writable`), is a
    non-empty directory and ``overwrite`` is false, or is inside, equal to, or a parent of one
    of ``inputs`` (pass every local input directory: model, base, an adapter's recorded base;
    :func:`surgeon.loading.input_dirs` lists them). Call it before loading any model.
    """
    resolved = check_writable(target)
    for item in inputs:
        if item is None:
            continue
        protected = Path(item).expanduser().resolve()
        if resolved == protected or protected in resolved.parents:
            raise InputError(
                f"{target}: output directory is inside the input {item}; "
                "inputs are read-only, choose another --out"
            )
        if resolved in protected.parents:
            raise InputError(
                f"{target}: output directory contains the input {item}; choose another --out"
            )
    try:
        non_empty = resolved.is_dir() and any(resolved.iterdir())
    except OSError as exc:
        raise InputError(f"{target}: cannot read the directory ({exc.strerror or exc})") from None
    if non_empty and not overwrite:
        raise InputError(f"{target}: directory exists and is not empty (use --overwrite)")
    return resolved


@contextmanager
def atomic_output_dir(
    target: Path, overwrite: bool = False, inputs: Sequence[Path] = ()
) -> Iterator[Path]:
    """Yield a fresh temporary sibling ``.<name>.tmp-XXXXXXXX`` of ``target`` to write into.

    When the ``with`` block succeeds the temporary directory is renamed to ``target``
    (an existing ``target`` is replaced only if ``overwrite``; it is first moved aside and
    restored if the rename fails). When the block raises, the temporary directory is removed
    and an existing ``target`` is left untouched. See :func:`check_output_target` for the
    checks made before anything is written.
    """
    final = check_output_target(target, overwrite=overwrite, inputs=inputs)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{target}: cannot create the parent directory ({exc})") from None
    tmp = _fresh_sibling(final, "tmp")
    try:
        yield tmp
        _move_into_place(tmp, final, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fresh_sibling(final: Path, tag: str) -> Path:
    """Create and return an empty directory ``.<name>.<tag>-<random>`` beside ``final``."""
    for _ in range(100):
        candidate = final.with_name(f".{final.name}.{tag}-{secrets.token_hex(4)}")
        try:
            candidate.mkdir()  # honours the umask, unlike tempfile.mkdtemp's 0700
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"{final}: cannot create a directory beside it ({exc})") from None
        return candidate
    raise InputError(f"{final}: could not create a temporary directory beside it")


def _move_into_place(tmp: Path, final: Path, *, overwrite: bool) -> None:
    if not final.exists():
        os.rename(tmp, final)
        return
    if not any(final.iterdir()):
        os.rmdir(final)
        os.rename(tmp, final)
        return
    if not overwrite:  # something appeared in the target while we worked
        raise InputError(f"{final}: directory became non-empty while writing; nothing replaced")
    old = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
