"""Residual-stream activations at the post-instruction positions, every layer in one pass.

The activation "after layer l" is the output of decoder block l (TransformerLens'
``blocks.l.hook_resid_post``), read with scoped forward hooks on the layers that
:func:`surgeon.architecture.find_layers` finds. Only the last ``positions`` tokens of each
left-padded prompt are kept (the chat template's assistant header), so one batched forward
collects every layer at the cost of a bare forward. The batch carries ``position_ids`` counted
from each row's first real token (:func:`surgeon.tokens.encode`), so a batched prompt's
activations equal its activations alone, for absolute-position models (GPT-2) too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from surgeon.architecture import find_layers
from surgeon.generation import forward_kwargs, model_device
from surgeon.progress import progress
from surgeon.tokens import encode


def hidden_of(output: Any) -> Tensor:
    """The hidden-state tensor of a decoder layer's output (a tensor or a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def replace_hidden(output: Any, hidden: Tensor) -> Any:
    """A layer output with its hidden state replaced, in the same container shape."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def capture_layers(
    layers: Sequence[nn.Module], positions: int
) -> Iterator[list[list[Float[Tensor, "batch d_model"]]]]:
    """Record, per layer, the mean of the last ``positions`` hidden states of every forward.

    Yields one list per layer that fills with a ``[batch, d_model]`` float32 tensor per forward,
    left on the layer's device (no host sync inside the forward). The hooks are removed when
    the block exits, also on an exception.
    """
    store: list[list[Tensor]] = [[] for _ in layers]

    def make_hook(i: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            h = hidden_of(output)[:, -positions:, :]
            store[i].append(h.float().mean(dim=1))

        return hook

    handles = [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(layers)]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def collect_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    positions: int = 1,
    batch_size: int = 16,
    desc: str = "activations",
) -> Float[Tensor, "n_layers n_prompts d_model"]:
    """Residual activations after every decoder layer, averaged over the last ``positions`` tokens.

    ``texts`` are already formatted prompts (:func:`surgeon.chat.format_prompt`); they are
    left-padded so the last positions are real tokens in every row.
    """
    if positions < 1:
        raise ValueError(f"positions must be >= 1, got {positions}")
    if not texts:
        raise ValueError("collect_activations needs at least one prompt")
    layers = find_layers(model).layers
    device = model_device(model)
    extra = forward_kwargs(model)
    batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    was_training = model.training
    model.eval()
    try:
        with capture_layers(list(layers), positions) as store:
            for batch in progress(batches, desc=desc):
                enc = encode(tokenizer, batch, device)
                model(**enc, use_cache=False, **extra)
    finally:
        model.train(was_training)
    return torch.stack([torch.cat([t.cpu() for t in per_layer]) for per_layer in store])
