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


WRITER_NAMES = ("self_attn", "attn", "attention", "mlp")
"""Children of a decoder layer whose outputs are added to the residual stream."""
SANDWICH_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm")
"""Gemma-2-style layers normalise each block's output before adding it: these write instead."""


def residual_writers(layer: nn.Module) -> list[nn.Module]:
    """The modules of one decoder layer whose outputs are added to the residual stream
    (attention and MLP; their output norms in sandwich-norm layers)."""
    if all(hasattr(layer, name) for name in SANDWICH_NORMS):
        return [getattr(layer, name) for name in SANDWICH_NORMS]
    return [
        getattr(layer, name)
        for name in WRITER_NAMES
        if isinstance(getattr(layer, name, None), nn.Module)
    ]


@contextmanager
def ablate_direction(model: nn.Module, direction: Float[Tensor, " d_model"]) -> Iterator[None]:
    """Project ``direction`` out of the residual stream everywhere: ``x <- x - (x.r) r``.

    As Arditi et al. (``get_all_direction_ablation_hooks``): on the embedding output and the
    first layer's input, on what each attention and MLP block writes, and on every decoder
    layer's output, at every
    position, so no block reads or writes the direction (an MLP never sees what the attention
    of its own layer wrote along it). ``direction`` need not be unit length; a zero vector
    changes nothing.
    """
    r = unit(direction)

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        h = hidden_of(output)
        rr = r.to(device=h.device, dtype=h.dtype)
        return replace_hidden(output, h - (h @ rr).unsqueeze(-1) * rr)

    def pre_hook(_module: nn.Module, args: Any, kwargs: Any) -> Any:
        # what the first layer reads: the token embeddings plus whatever is added after them
        # (GPT-2's learned positions)
        if args:
            h = args[0]
            rr = r.to(device=h.device, dtype=h.dtype)
            return (h - (h @ rr).unsqueeze(-1) * rr, *args[1:]), kwargs
        h = kwargs["hidden_states"]
        rr = r.to(device=h.device, dtype=h.dtype)
        return args, {**kwargs, "hidden_states": h - (h @ rr).unsqueeze(-1) * rr}

    layers = list(find_layers(model).layers)
    writers = [w for layer in layers for w in residual_writers(layer)]
    modules = [_input_embeddings(model), *writers, *layers]
    handles = []
    try:
        handles.append(layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
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
