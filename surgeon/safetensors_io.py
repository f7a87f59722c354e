"""Read safetensors checkpoints lazily and check them before anything else touches them."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from surgeon.errors import InputError

INDEX_NAME = "model.safetensors.index.json"
NOT_WEIGHTS = frozenset({"rollback_mask.safetensors", "adapter_model.safetensors"})
"""Safetensors files that may sit beside a model's weights without being part of them."""
MAX_HEADER = 100_000_000
"""The largest header the safetensors format allows."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]


def read_header(path: Path) -> dict[str, dict]:
    """The JSON header of a safetensors file, checked against the file's size.

    Raises :class:`InputError` naming the file when it is truncated or not safetensors.
    """
    size = path.stat().st_size
    try:
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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a valid safetensors file ({exc})") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size < 8 + n + end:
        raise InputError(
            f"{path}: truncated safetensors file (has {size} bytes, header needs {8 + n + end})"
        )
    return header


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (sharded or not), in shard order."""
    index = directory / INDEX_NAME
    if index.exists():
        try:
            mapping = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise InputError(f"{index}: unreadable shard index ({exc})") from None
        files = sorted({directory / f for f in mapping.values()})
        missing = [f for f in files if not f.exists()]
        if missing:
            raise InputError(f"{index}: names a missing shard {missing[0].name}")
        return files
    files = sorted(directory.glob("*.safetensors"))
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
