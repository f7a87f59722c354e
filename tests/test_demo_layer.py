"""The demo's rollback bound: every decoder layer of the diagnosed model is eligible."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from surgeon.demo import repair_layer


def _diagnosis(n_layers: int) -> Any:
    return SimpleNamespace(directions=SimpleNamespace(layers=[object()] * n_layers))


def test_repair_layer_makes_every_decoder_layer_eligible() -> None:
    # the small organism's most drifted layer is 1 (L = 2 left the ceiling at 100% harmful):
    # the bound does not follow it
    assert repair_layer(_diagnosis(6)) == 6
    assert repair_layer(_diagnosis(30)) == 30


def test_repair_layer_without_layers_keeps_the_default() -> None:
    assert repair_layer(_diagnosis(0)) is None
