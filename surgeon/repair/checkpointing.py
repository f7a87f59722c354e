"""Activation checkpointing of decoder layers for the duration of a block, for any model.

A rollback step backpropagates a loss through every decoder layer; kept activations grow with
depth, batch and length (about 2 GB for 16 answers of ~100 tokens through SmolLM2-135M's 30
layers). Inside :func:`checkpointed` each layer keeps only its input and recomputes the rest
in the backward pass (``torch.utils.checkpoint``, non-reentrant), whatever the model's class
and its training mode (transformers' own switch acts only in training mode, which would also
turn dropout on). Forward passes without gradients are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextmanager
def checkpointed(layers: Sequence[nn.Module]) -> Iterator[None]:
    """Checkpoint every module of ``layers`` while gradients are enabled; restored on exit."""
    patched: list[nn.Module] = []

    def wrap(forward: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            if torch.is_grad_enabled():
                return checkpoint(forward, *args, use_reentrant=False, **kwargs)
            return forward(*args, **kwargs)

        return run

    try:
        for layer in layers:
            if "forward" in layer.__dict__:  # already patched (nested use): leave it
                continue
            layer.forward = wrap(layer.forward)  # type: ignore[method-assign]
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            del layer.forward
