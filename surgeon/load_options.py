"""How to place and type a model: the loading options every model-running command shares.

Kept free of torch at import (the command line reads these options to build its flags);
torch is imported when an option is resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from surgeon.errors import InputError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("float32", "bfloat16", "float16")
"""The dtypes ``--dtype`` names besides ``auto``."""


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (one of :data:`DTYPE_NAMES`)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@dataclass(frozen=True)
class LoadOptions:
    """How to place and type a model. Mirrors the common CLI flags."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto``: float32 on the CPU, the checkpoint's dtype on a GPU."""
    device: str = "cpu"
    """``cpu``, ``cuda`` (or ``cuda:N``) or ``auto`` (CUDA when available)."""
    device_map: Literal["auto"] | None = None
    """``auto`` dispatches across GPUs and CPU with accelerate; overrides ``device``."""
    trust_remote_code: bool = False
    """Run code shipped with the checkpoint."""
    gguf_file: str | None = None
    """The GGUF file (a name) to load from a MODEL or BASE directory holding several."""

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPE_NAMES:
            names = ", ".join(DTYPE_NAMES)
            raise InputError(f"--dtype must be auto, {names}; got {self.dtype!r}")
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?|mps", self.device):
            raise InputError(f"--device must be cpu, cuda, cuda:N or auto; got {self.device!r}")
        if self.device_map not in (None, "auto"):
            raise InputError(f"--device-map must be 'auto'; got {self.device_map!r}")
        if self.gguf_file is not None and (
            not self.gguf_file or "/" in self.gguf_file or self.gguf_file in (".", "..")
        ):
            raise InputError(f"--gguf-file must be a file name, not a path; got {self.gguf_file!r}")

    def resolved_device(self) -> str:
        """The concrete device: ``auto`` becomes cuda when available."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA device is available")
        return self.device

    def resolved_dtype(self, config: Any) -> torch.dtype:
        """The torch dtype to load in (``config``: the model's config)."""
        import torch

        if self.dtype != "auto":
            return torch_dtype(self.dtype)
        if self.device_map is None and self.resolved_device() == "cpu":
            return torch.float32
        stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        if isinstance(stored, str):
            stored = torch_dtype(stored) if stored in DTYPE_NAMES else None
        return stored if isinstance(stored, torch.dtype) else torch.float32
