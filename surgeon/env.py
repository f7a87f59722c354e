"""Versions for bug reports and provenance."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

PACKAGES = ("surgeon", "torch", "transformers", "transformer-lens", "peft", "safetensors", "typer")


def versions() -> dict[str, str]:
    """Python, platform and the versions of the packages surgeon depends on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        import torch

        out["cuda"] = torch.version.cuda or "none"
        out["cuda_available"] = str(torch.cuda.is_available())
    except ImportError:
        pass
    return out
