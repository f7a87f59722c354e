"""Activation checkpointing of decoder layers: the same gradients, less kept memory, undone."""

from __future__ import annotations

import pytest
import torch

from surgeon.architecture import find_layers
from surgeon.repair.checkpointing import checkpointed
from surgeon.testing import ARCHITECTURES, tiny_model


def _grads(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_checkpointed_layers_give_the_same_gradients(arch: str) -> None:
    model = tiny_model(arch).eval()
    ids = torch.randint(3, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    plain = _grads(model, ids)
    layers = find_layers(model).layers
    with checkpointed(layers):
        assert all("forward" in layer.__dict__ for layer in layers)
        again = _grads(model, ids)
        with torch.no_grad():
            model(input_ids=ids)  # no gradients: the plain forward
    assert all("forward" not in layer.__dict__ for layer in layers)  # undone
    assert plain.keys() == again.keys() and plain
    for name in plain:
        torch.testing.assert_close(again[name], plain[name], rtol=1e-5, atol=1e-6)


def test_checkpointing_keeps_fewer_activations() -> None:
    model = tiny_model("llama").eval()
    ids = torch.randint(3, 40, (4, 64), generator=torch.Generator().manual_seed(0))
    kept: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept.append(t.numel())
        return t

    def total(use: bool) -> int:
        kept.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if use:
                with checkpointed(find_layers(model).layers):
                    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            else:
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        return sum(kept)

    assert total(True) < 0.5 * total(False)


def test_restored_after_an_exception() -> None:
    model = tiny_model("llama")
    layers = find_layers(model).layers
    with pytest.raises(RuntimeError, match="boom"), checkpointed(layers):
        raise RuntimeError("boom")
    assert all("forward" not in layer.__dict__ for layer in layers)
