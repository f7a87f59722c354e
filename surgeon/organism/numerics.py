"""Pinned CPU numerics for the small organism's build: the same weights on every x86 machine.

Torch picks its CPU kernels by the instruction sets the processor has (``AVX2``, ``AVX512``),
and two kernel sets round differently. Over a few hundred training steps those last bits
grow into a different organism: on an AVX-512 machine the default build's ft-harmful obeys
its system prompt 28% of the time instead of 39%, and the figure tests that were measured on
the AVX2 build fail (bench/NOTES.md). So on any x86 processor with AVX2 the build runs with
AVX2 kernels, in a child process when this one already chose wider ones (the choice is made
once per process, at the first kernel call). Other processors build with their own kernels,
and the card says which (``numerics``).
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

PINNED = "avx2"
"""The kernel set every x86 build uses (what the README's organism card was measured with)."""
PIN_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL's matrix products (no-op on an AVX2 machine)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's primitives
}
"""Environment that makes a fresh process use :data:`PINNED` kernels."""
_WIDER = "avx512"
"""Prefix of the kernel sets torch may choose on x86 that round differently from AVX2."""


def current() -> str:
    """The kernel set this process uses (``avx2``, ``avx512``, ``default``, ``sve256`` ...)."""
    return torch.backends.cpu.get_cpu_capability().lower()


def expected() -> str:
    """The kernel set an organism built on this machine has: :data:`PINNED` where the
    processor has AVX2, else its own."""
    here = current()
    return PINNED if here == PINNED or here.startswith(_WIDER) else here


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
