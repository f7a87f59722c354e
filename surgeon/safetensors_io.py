"""Read safetensors checkpoints lazily and check them before anything else touches them.

:func:`read_header` checks a file's structure (header object, entries, offsets, size) from its
header alone; :func:`check_finite` streams its floating tensors once and names the first one
holding a NaN or an infinity. Both raise :class:`InputError` naming the file.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from surgeon.errors import InputError

INDEX_NAME = "model.safetensors.index.json"
NOT_WEIGHTS = frozenset({"rollback_mask.safetensors", "adapter_model.safetensors"})
"""Safetensors files that may sit beside a model's weights without being part of them."""
MAX_HEADER = 100_000_000
"""The largest header the safetensors format allows."""
FLOAT_DTYPES = frozenset(
    {"F64", "F32", "F16", "BF16", "F8_E5M2", "F8_E4M3", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0"}
)
"""Safetensors dtypes whose values can be NaN or infinite (and that torch reads)."""
SCAN_CHUNK = 1 << 24
"""Entries read at a time by :func:`check_finite` (bounds its memory for huge tensors)."""

_FINITE_FILES: set[tuple[str, int, int]] = set()
"""(resolved path, size, mtime) of files already found finite in this process."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]


def _open_error(path: Path, exc: OSError) -> InputError:
    return InputError(f"{path}: cannot read ({exc.strerror or exc})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entries(path: Path, header: Any) -> dict[str, dict]:
    """The header as a dict of tensor entries, or :class:`InputError` saying what is wrong."""
    if not isinstance(header, dict):
        kind = type(header).__name__
        raise InputError(f"{path}: not a valid safetensors file (header is a JSON {kind})")
    meta = header.get("__metadata__")
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
    ):
        raise InputError(f"{path}: not a valid safetensors file (__metadata__ must map to text)")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: not a valid safetensors file (tensor {name!r}"
        if not isinstance(entry, dict):
            raise InputError(f"{where} is not an object)")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in entry:
                raise InputError(f"{where} has no {key})")
        if not isinstance(entry["dtype"], str):
            raise InputError(f"{where} has a dtype that is not text)")
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise InputError(f"{where} has shape {shape!r}, not a list of sizes)")
        offsets = entry["data_offsets"]
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise InputError(f"{where} has data_offsets {offsets!r}, not [begin, end])")
    return header


def read_header(path: Path) -> dict[str, dict]:
    """The JSON header of a safetensors file, checked against the file's size and the format.

    Raises :class:`InputError` naming the file when it is unreadable, truncated or not
    safetensors (header not an object, an entry without dtype, shape or data_offsets, offsets
    that do not match the shapes).
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise InputError(f"{path}: truncated safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER:
                raise InputError(f"{path}: not a valid safetensors file (bad header length)")
            if n > size - 8:
                raise InputError(
                    f"{path}: truncated safetensors file (has {size} bytes, its header "
                    f"alone needs {8 + n})"
                )
            header = json.loads(f.read(n))
    except OSError as exc:
        raise _open_error(path, exc) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a valid safetensors file ({exc})") from None
    header = _check_entries(path, header)
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size < 8 + n + end:
        raise InputError(
            f"{path}: truncated safetensors file (has {size} bytes, header needs {8 + n + end})"
        )
    try:  # the library's own checks: known dtypes, sizes that match shapes, contiguous data
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as exc:
        reason = str(exc).removeprefix("Error while deserializing header: ")
        raise InputError(f"{path}: not a valid safetensors file ({reason})") from None
    except OSError as exc:
        raise _open_error(path, exc) from None
    return header


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (sharded or not), in shard order."""
    index = directory / INDEX_NAME
    if index.exists():
        try:
            mapping = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            if not isinstance(mapping, dict) or not all(
                isinstance(v, str) for v in mapping.values()
            ):
                raise TypeError("weight_map must map tensor names to file names")
        except OSError as exc:
            raise _open_error(index, exc) from None
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{index}: unreadable shard index ({exc})") from None
        files = sorted({directory / f for f in mapping.values()})
        missing = [f for f in files if not f.exists()]
        if missing:
            raise InputError(f"{index}: names a missing shard {missing[0].name}")
        return files
    try:
        files = sorted(directory.glob("*.safetensors"))
    except OSError as exc:
        raise _open_error(directory, exc) from None
    return [f for f in files if f.name not in NOT_WEIGHTS]


def tensor_index(directory: Path) -> dict[str, TensorInfo]:
    """Every tensor of a safetensors checkpoint with its file, dtype and shape (headers only)."""
    out: dict[str, TensorInfo] = {}
    for file in weight_files(directory):
        for name, meta in read_header(file).items():
            if name == "__metadata__":
                continue
            out[name] = TensorInfo(name, file, meta["dtype"], tuple(meta["shape"]))
    return out


def non_finite_summary(values: torch.Tensor, numel: int | None = None) -> str:
    """``"2 NaN and 1 infinite of 4096 entries"``: the non-finite entries of ``values`` out of
    ``numel`` (default: the size of ``values``)."""
    values = values.float()
    nan = int(torch.isnan(values).sum())
    inf = int(torch.isinf(values).sum())
    parts = [f"{nan} NaN"] if nan else []
    parts += [f"{inf} infinite"] if inf else []
    return f"{' and '.join(parts) or 'no non-finite'} of {numel or values.numel()} entries"


def all_finite(chunk: torch.Tensor) -> bool:
    """True when every entry of a floating tensor is finite; min and max propagate NaN, so one
    pass decides (no copy, no boolean tensor the size of the input)."""
    if chunk.numel() == 0:
        return True
    if chunk.dtype.itemsize == 1:  # float8: no aminmax on the CPU
        chunk = chunk.to(torch.float16)
    low, high = torch.aminmax(chunk)
    return bool(torch.isfinite(low) and torch.isfinite(high))


def _scan_tensor(handle: Any, name: str) -> str | None:
    """None when the tensor is finite, else a summary of its non-finite entries."""
    part = handle.get_slice(name)
    shape = part.get_shape()
    if not shape:
        value = handle.get_tensor(name)
        return None if all_finite(value.reshape(1)) else non_finite_summary(value)
    row = 1
    for d in shape[1:]:
        row *= d
    step = max(1, SCAN_CHUNK // max(row, 1))
    bad: list[torch.Tensor] = []
    for start in range(0, shape[0], step):
        chunk = part[start : start + step]
        if not all_finite(chunk):
            bad.append(chunk.float().reshape(-1))
    return non_finite_summary(torch.cat(bad), row * shape[0]) if bad else None


def check_finite(path: Path) -> None:
    """Raise :class:`InputError` naming the file and the tensor when a floating tensor of a
    safetensors file holds a NaN or an infinity.

    Streams the file in chunks of :data:`SCAN_CHUNK` entries, one min/max pass each (3 GB/s of
    bfloat16 on one CPU core from the page cache); a file already found finite in this process
    (same path, size and modification time) is not read again.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise _open_error(path, exc) from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _FINITE_FILES:
        return
    header = read_header(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            for name, entry in header.items():
                if name == "__metadata__" or entry["dtype"] not in FLOAT_DTYPES:
                    continue
                problem = _scan_tensor(handle, name)
                if problem is not None:
                    raise InputError(
                        f"{path}: tensor {name} holds non-finite values ({problem}); "
                        "the input weights must be finite"
                    )
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{path}: cannot read the tensors ({exc})") from None
    _FINITE_FILES.add(key)


def check_files_readable(paths: list[Path]) -> None:
    """Raise :class:`InputError` naming the first file that cannot be opened for reading."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise _open_error(path, exc) from None
        os.close(fd)
