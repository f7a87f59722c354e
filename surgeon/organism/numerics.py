"""Pinned CPU numerics for the small organism's build: the same weights on every x86 machine.

Torch picks its CPU kernels by the instruction sets the processor has (``AVX2``, ``AVX512``),
and MKL, which computes its matrix products, picks its code by the processor's vendor and
model as well. Two kernel sets round differently, and over a few hundred training steps those
last bits grow into a different organism: on an AVX-512 machine the default build's
ft-harmful obeys its system prompt 28% of the time instead of 39%, and with AVX2 kernels alone
an Intel Xeon and an AMD EPYC still built different organisms (bench/NOTES.md). So on any x86
processor with AVX2 the build runs with torch's AVX2 kernels, oneDNN capped at AVX2 and MKL in
its conditional-numerical-reproducibility mode on the ``COMPATIBLE`` branch (the one code
path MKL documents to give the same results on Intel and other x86 processors), in a child
process when this one was not started that way (both choices are made once per process).
Other processors build with their own kernels, and the card says which (``numerics``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from surgeon.errors import RuntimeFailure
from surgeon.organism.config import OrganismConfig

MKL_BRANCH = "COMPATIBLE"
"""MKL's reproducible code branch for the build (SSE2 without approximate reciprocals: about
3x slower matrix products than AVX2, the same bits on every vendor's processor)."""
_KERNELS = "avx2"
"""Torch's kernel set for the build."""
_MKL_TAG = "mkl-compatible"
"""How :func:`current` names a process started with :data:`MKL_BRANCH`."""
PINNED = f"{_KERNELS}/{_MKL_TAG}"
"""The numerics every x86 build uses (what the README's organism card was measured with)."""
PIN_ENV = {
    "ATEN_CPU_CAPABILITY": _KERNELS,  # torch's own vectorised kernels
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL's widest instructions
    "MKL_CBWR": MKL_BRANCH,  # MKL's matrix products: one code path on every x86 vendor
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's primitives
}
"""Environment that makes a fresh process use :data:`PINNED` numerics."""
_WIDER = "avx512"
"""Prefix of the kernel sets torch may choose on x86 that round differently from AVX2."""


def _kernels() -> str:
    """Torch's kernel set in this process (``avx2``, ``avx512``, ``default``, ``sve256`` ...)."""
    return torch.backends.cpu.get_cpu_capability().lower()


def current() -> str:
    """This process's numerics: :func:`_kernels`, with ``/mkl-compatible`` when it was
    started with MKL's reproducible branch (MKL reads ``MKL_CBWR`` once, at its first call)."""
    mkl = os.environ.get("MKL_CBWR", "").split(",")[0].strip().upper() == MKL_BRANCH
    return f"{_kernels()}/{_MKL_TAG}" if mkl else _kernels()


def expected() -> str:
    """The numerics an organism built on this machine has: :data:`PINNED` where the
    processor has AVX2, else its own."""
    kernels = _kernels()
    return PINNED if kernels == _KERNELS or kernels.startswith(_WIDER) else current()


def needs_child() -> bool:
    """True when this process's kernels are not the build's (a pinned child must build)."""
    return current() != expected()


def build_in_child(out_dir: Path, config: OrganismConfig, final_dir: Path) -> None:
    """Build the organism into ``out_dir`` in a child process with :data:`PIN_ENV` (its
    progress goes to this process's terminal); a failed build raises :class:`RuntimeFailure`."""
    env = dict(os.environ, **PIN_ENV)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    cmd = [
        sys.executable,
        "-m",
        "surgeon.organism.build_child",
        str(out_dir),
        str(final_dir),
        json.dumps(config.to_dict()),
    ]
    done = subprocess.run(cmd, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeFailure(
            f"the organism build (a child process with {PINNED} kernels) failed with exit "
            f"code {done.returncode}; its output is above"
        )
