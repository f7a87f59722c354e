"""Read a checkpoint's tensors one at a time, only when asked (the base of a rollback).

Each read opens the safetensors file, copies one tensor out and closes the file again, so no
mapping of the whole checkpoint stays resident; the last tensor read is kept for reuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from torch import Tensor

from surgeon.errors import InputError
from surgeon.safetensors_io import TensorInfo, tensor_index


class BaseValues(Protocol):
    """Where a rollback reads the values it restores: :class:`LazyTensors` for a model's own
    weights, :class:`surgeon.repair.adapter_space.AdapterBase` for an adapter's tensors."""

    directory: Path
    """The base checkpoint (for messages)."""

    def __call__(self, name: str) -> Tensor:
        """The base value of the working model's tensor ``name``, fp32."""
        ...

    def clear(self) -> None:
        """Drop whatever is cached."""
        ...


class LazyTensors:
    """Tensors of a local safetensors checkpoint, read on demand as fp32 on ``device``."""

    def __init__(self, directory: Path, device: torch.device | str = "cpu") -> None:
        self.directory = Path(directory)
        self.index: dict[str, TensorInfo] = tensor_index(self.directory)
        if not self.index:
            raise InputError(f"{directory}: no safetensors weights to read the base from")
        self.device = torch.device(device)
        self._cached: tuple[str, Tensor] | None = None

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def shape(self, name: str) -> tuple[int, ...]:
        """Stored shape of a tensor (header only)."""
        return self._info(name).shape

    def _info(self, name: str) -> TensorInfo:
        info = self.index.get(name)
        if info is None:
            raise InputError(f"{self.directory}: base checkpoint has no tensor {name}")
        return info

    def __call__(self, name: str) -> Tensor:
        """The tensor ``name`` as fp32 on the reader's device."""
        if self._cached is not None and self._cached[0] == name:
            return self._cached[1]
        info = self._info(name)
        self._cached = None
        with safe_open(str(info.file), framework="pt") as f:
            tensor = f.get_tensor(name)
        tensor = tensor.to(device=self.device, dtype=torch.float32)
        self._cached = (name, tensor)
        return tensor

    def clear(self) -> None:
        """Drop the cached tensor."""
        self._cached = None
