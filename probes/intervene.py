"""Scoped interventions on the residual stream: directional ablation and activation addition.

Both are context managers whose hooks are removed in ``finally``, so a failed probe never
leaves the model altered (Arditi et al. 2024, ``add_hooks``; TransformerLens ``hooks()``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from probes.activations import hidden_of, replace_hidden
from surgeon.architecture import find_layers


def unit(direction: Float[Tensor, " d_model"]) -> Float[Tensor, " d_model"]:
    """``direction`` scaled to norm 1; the zero vector stays zero (ablating it is a no-op)."""
    d = direction.detach().float()
    norm = d.norm()
    return d / norm if norm > 0 else torch.zeros_like(d)


def _input_embeddings(model: nn.Module) -> nn.Module:
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    return root.get_input_embeddings()


@contextmanager
def ablate_direction(model: nn.Module, direction: Float[Tensor, " d_model"]) -> Iterator[None]:
    """Project ``direction`` out of the residual stream everywhere: ``x <- x - (x.r) r``.

    Hooks sit on the embedding output and on every decoder layer's output, so no layer reads
    or writes the direction. ``direction`` need not be unit length; a zero vector changes
    nothing.
    """
    r = unit(direction)

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        h = hidden_of(output)
        rr = r.to(device=h.device, dtype=h.dtype)
        return replace_hidden(output, h - (h @ rr).unsqueeze(-1) * rr)

    modules = [_input_embeddings(model), *find_layers(model).layers]
    handles = []
    try:
        for module in modules:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def add_direction(
    model: nn.Module, layer: int, vector: Float[Tensor, " d_model"], scale: float = 1.0
) -> Iterator[None]:
    """Add ``scale * vector`` to the residual stream after decoder ``layer``, at all positions."""
    layers = find_layers(model).layers
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer must be in [0, {len(layers)}), got {layer}")
    v = vector.detach().float() * scale

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        h = hidden_of(output)
        return replace_hidden(output, h + v.to(device=h.device, dtype=h.dtype))

    handle = None
    try:
        handle = layers[layer].register_forward_hook(hook)
        yield
    finally:
        if handle is not None:
            handle.remove()
