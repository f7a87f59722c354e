"""Last-prompt-token residual states after a decoder layer, and the cosine losses built on them.

The forward pass stops at the chosen layer (a hook raises once it has the output), so layers
above it cost nothing and hold no activations. Hooks are removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from surgeon.architecture import LayerList
from surgeon.generation import model_device
from surgeon.tokens import encode


class _StopForward(Exception):  # noqa: N818 - control flow, not an error
    """Raised by the capture hook to end the forward pass at the chosen layer."""


def last_token_hidden(
    model: nn.Module, layers: LayerList, layer: int, batch: dict[str, Tensor]
) -> Float[Tensor, "batch d_model"]:
    """Residual stream after decoder layer ``layer - 1`` (``hidden_states[layer]``) at the last
    (left-padded) position; differentiable when parameters require grad."""
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _args: object, output: object) -> None:
        hs = output[0] if isinstance(output, tuple) else output
        assert isinstance(hs, Tensor)
        captured.append(hs[:, -1, :])
        raise _StopForward

    handle = layers.layers[layer - 1].register_forward_hook(hook)
    try:
        model(**batch, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"decoder layer {layer - 1} did not run")
    return captured[0]


def batches(texts: Sequence[str], size: int) -> list[list[str]]:
    """Consecutive chunks of ``size`` texts."""
    return [list(texts[i : i + size]) for i in range(0, len(texts), size)]


@torch.no_grad()
def mean_hidden(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    layers: LayerList,
    layer: int,
    texts: Sequence[str],
    batch_size: int,
) -> Float[Tensor, " d_model"]:
    """Mean last-token residual state after ``layer`` over formatted prompts (fp32, CPU)."""
    device = model_device(model)
    total: Tensor | None = None
    for chunk in batches(texts, batch_size):
        hs = last_token_hidden(model, layers, layer, dict(encode(tokenizer, chunk, device)))
        part = hs.float().sum(0).cpu()
        total = part if total is None else total + part
    if total is None:
        raise ValueError("mean_hidden needs at least one prompt")
    return total / len(texts)


def accumulate_cosine_grad(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    layers: LayerList,
    layer: int,
    texts: Sequence[str],
    direction: Float[Tensor, " d_model"],
    batch_size: int,
    center: Float[Tensor, " d_model"] | None = None,
) -> float:
    """Backpropagate ``-cos(mean last-token state of a batch - center, direction)`` for every
    batch (``center``: none, or a mean state subtracted first).

    Gradients add up in ``.grad`` of the parameters that require grad (the caller zeroes them).
    Returns the mean loss over the batches.
    """
    device = model_device(model)
    target = direction.to(device)
    offset = center.to(device) if center is not None else torch.zeros_like(target)
    losses: list[float] = []
    for chunk in batches(texts, batch_size):
        hs = last_token_hidden(model, layers, layer, dict(encode(tokenizer, chunk, device)))
        mean = hs.float().mean(0) - offset
        loss = -torch.nn.functional.cosine_similarity(mean, target, dim=0)
        loss.backward()
        losses.append(float(loss.detach()))
    return sum(losses) / max(len(losses), 1)
