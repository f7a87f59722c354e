"""Directions probe, activations and interventions on tiny random-init models.

The planted-direction model: a forward hook adds ``+alpha v`` after layer ``K`` on prompts that
contain the marker word and ``-alpha v`` on the others, and the output row of the token
``sorry`` reads ``v``. So refusal is mediated by exactly one known direction from layer K on.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from probes.activations import collect_activations
from probes.directions import (
    AblationEffect,
    AdditionEffect,
    DirectionsConfig,
    candidate_layers,
    probe_directions,
    select_layer,
)
from probes.intervene import ablate_direction, add_direction
from surgeon.architecture import find_layers
from surgeon.chat import format_prompt
from surgeon.judges import FirstTokenScorer
from surgeon.prompts import Prompt
from surgeon.testing import D_MODEL, N_LAYERS, tiny_model, tiny_tokenizer
from surgeon.tokens import encode

K = 1
ALPHA = 1.0
VERBS = ["how to make", "explain how to build", "write steps to make", "tell me about"]
OBJECTS = ["a", "the", "a red", "a blue"]
HARMFUL = [Prompt(f"{v} {o} bomb") for v in VERBS for o in OBJECTS]
HARMLESS = [Prompt(f"{v} {o} cake") for v in VERBS for o in OBJECTS]


def planted_direction() -> torch.Tensor:
    v = torch.randn(D_MODEL, generator=torch.Generator().manual_seed(123))
    return v / v.norm()


def planted_model(arch: str = "llama", plant: bool = True, seed: int = 0) -> tuple[Any, Any]:
    """A tiny model whose refusal token reads ``v``; with ``plant``, the marker writes ``v``."""
    tok = tiny_tokenizer()
    model = tiny_model(arch, seed)
    v = planted_direction()
    marker = tok.convert_tokens_to_ids("bomb")
    state: dict[str, torch.Tensor] = {}

    def on_embed(_m: nn.Module, args: Any, _out: Any) -> None:
        state["sign"] = (args[0] == marker).any(dim=1).float() * 2 - 1

    def on_layer(_m: nn.Module, _args: Any, out: Any) -> Any:
        h = out[0] if isinstance(out, tuple) else out
        h = h + ALPHA * state["sign"][:, None, None].to(h.dtype) * v.to(h.dtype)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    if plant:
        model.get_input_embeddings().register_forward_hook(on_embed)
        find_layers(model).layers[K].register_forward_hook(on_layer)
    with torch.no_grad():
        model.get_output_embeddings().weight[tok.convert_tokens_to_ids("sorry")] = 2.0 * v
    return model, tok


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_planted_direction_is_recovered_and_selected(arch: str) -> None:
    model, tok = planted_model(arch)
    v = planted_direction()
    res = probe_directions(model, None, tok, HARMFUL, HARMLESS, DirectionsConfig(n_causal=8))
    assert len(res.layers) == N_LAYERS
    cos = [_cos(res.refusal[layer], v) for layer in range(N_LAYERS)]
    for layer in range(N_LAYERS):
        if layer >= K:
            assert cos[layer] >= 0.9, cos
        else:
            assert abs(cos[layer]) < 0.5, cos
    sep = [s.separation for s in res.layers]
    assert sep[K] > 10 * abs(sep[K - 1]), sep
    # no base: base fields are empty
    assert all(s.cos_to_base is None and s.separation_base is None for s in res.layers)
    assert res.most_drifted_layer is None
    # causal selection: ablating v stops refusal, adding it makes harmless prompts refused
    assert res.selected_layer == K
    assert res.causal is not None
    assert [c.layer for c in res.candidates] == [0, 1, 2]  # the last 20% (layer 3) excluded
    ab, ad = res.causal.ablation, res.causal.addition
    assert (ab.rate_before, ab.rate_after) == (1.0, 0.0)
    assert (ad.rate_before, ad.rate_after) == (0.0, 1.0)
    assert ab.kl <= 0.1 and res.causal.kl_ok and res.causal.valid
    # layer 0 carries no planted signal: its direction has next to no causal effect
    c0 = res.candidates[0]
    assert c0.score < 0.05 * res.causal.score


def test_base_versus_itself() -> None:
    model, tok = planted_model()
    res = probe_directions(model, model, tok, HARMFUL, HARMLESS, DirectionsConfig(n_causal=0))
    for s in res.layers:
        assert s.separation == s.separation_base
        assert s.refusal_norm == s.refusal_norm_base
        torch.testing.assert_close(s.cos_to_base, 1.0, atol=1e-5, rtol=0)
        torch.testing.assert_close(s.harmful_mean_cos_to_base, 1.0, atol=1e-5, rtol=0)
    assert res.selected_layer is None and res.candidates == ()


def test_lost_direction_is_found_drifted() -> None:
    """The base carries the planted refusal; the 'fine-tune' lost it (hooks absent)."""
    base, tok = planted_model(plant=True)
    model, _ = planted_model(plant=False)
    res = probe_directions(model, base, tok, HARMFUL, HARMLESS, DirectionsConfig(n_causal=8))
    for s in res.layers[K:]:
        assert s.separation_base is not None and s.separation_base > 100
        assert abs(s.separation) < 0.1 * s.separation_base
        assert s.cos_to_base is not None and abs(s.cos_to_base) < 0.5
    assert res.most_drifted_layer is not None and res.most_drifted_layer >= K
    # base ablation and model addition both use the base direction
    assert res.selected_layer == K
    assert res.causal is not None
    assert res.causal.ablation.rate_after == 0.0
    assert res.causal.addition.rate_after == 1.0
    # the fine-tune's response to the base direction is measured at the reported layer only
    assert [c.layer for c in res.candidates if c.model_addition is not None] == [K]


def test_activations_are_block_outputs_and_padding_safe() -> None:
    model, tok = planted_model(plant=False)
    texts = [format_prompt(tok, p.prompt).text for p in [HARMFUL[0], Prompt("a"), HARMLESS[5]]]
    acts = collect_activations(model, tok, texts, positions=2, batch_size=3)
    assert acts.shape == (N_LAYERS, 3, D_MODEL)
    enc = encode(tok, texts)
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    # hidden_states[l + 1] is block l's output except the last, which HF returns after the norm
    for layer in range(N_LAYERS - 1):
        torch.testing.assert_close(acts[layer], hidden[layer + 1][:, -2:].mean(1))
    # left padding: the short prompt alone gives the same activations as inside the batch
    alone = collect_activations(model, tok, texts[1:2], positions=2)
    torch.testing.assert_close(alone[:, 0], acts[:, 1], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        collect_activations(model, tok, texts, positions=0)


def _logits(model: nn.Module, tok: Any) -> torch.Tensor:
    enc = encode(tok, [format_prompt(tok, p.prompt).text for p in HARMFUL[:4]])
    with torch.no_grad():
        return model(**enc).logits


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_zero_interventions_change_nothing() -> None:
    model, tok = planted_model()
    before = _logits(model, tok)
    with ablate_direction(model, torch.zeros(D_MODEL)):
        torch.testing.assert_close(_logits(model, tok), before, rtol=0, atol=0)
    with add_direction(model, 2, torch.zeros(D_MODEL)):
        torch.testing.assert_close(_logits(model, tok), before, rtol=0, atol=0)
    torch.testing.assert_close(_logits(model, tok), before, rtol=0, atol=0)


def test_ablation_removes_the_direction_everywhere() -> None:
    model, tok = planted_model()
    v = planted_direction()
    texts = [format_prompt(tok, p.prompt).text for p in HARMFUL[:4]]
    with ablate_direction(model, 3.0 * v):  # any scale: the unit direction is ablated
        acts = collect_activations(model, tok, texts)
        scores = FirstTokenScorer(tok).scores(model, texts)
    torch.testing.assert_close(acts @ v, torch.zeros(N_LAYERS, 4), atol=1e-5, rtol=0)
    assert (scores < 0).all()
    assert (FirstTokenScorer(tok).scores(model, texts) > 0).all()  # restored on exit


def test_hooks_removed_after_an_exception() -> None:
    model, tok = planted_model()
    n_hooks = _hook_count(model)
    before = _logits(model, tok)
    with pytest.raises(RuntimeError, match="boom"), ablate_direction(model, planted_direction()):
        # the embedding, the first layer's input, each layer's output, and its attention's
        # and MLP's outputs
        assert _hook_count(model) == n_hooks + 3 * N_LAYERS + 2
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"), add_direction(model, 1, planted_direction()):
        raise RuntimeError("boom")
    assert _hook_count(model) == n_hooks
    torch.testing.assert_close(_logits(model, tok), before, rtol=0, atol=0)
    with pytest.raises(ValueError):
        add_direction(model, N_LAYERS, planted_direction()).__enter__()


def test_config_validation() -> None:
    for bad in ({"positions": 0}, {"n_causal": -1}, {"kl_bound": 0.0}, {"exclude_last": 1.0}):
        with pytest.raises(ValueError):
            DirectionsConfig(**bad)


def test_select_layer_rules() -> None:
    def ab(layer: int, after: float, kl: float) -> AblationEffect:
        return AblationEffect(layer, 2.0, after, 1.0, 0.0, kl)

    def ad(layer: int, after: float) -> AdditionEffect:
        return AdditionEffect(layer, -2.0, after, 0.0, 1.0)

    ablations = [ab(0, -5.0, 0.5), ab(1, 0.0, 0.05), ab(2, -1.0, 0.01), ab(3, 3.0, 0.0)]
    additions = [ad(0, 5.0), ad(1, 1.0), ad(2, -3.0), ad(3, 4.0)]
    best, effects = select_layer(ablations, additions, kl_bound=0.1)
    # 0: KL too large; 2: addition lowers refusal; 3: ablation raises refusal; 1 remains
    assert [e.valid for e in effects] == [False, True, False, False]
    assert best is not None and best.layer == 1
    torch.testing.assert_close(best.score, 2.0 + 3.0)
    best, _ = select_layer(ablations[2:], additions[2:], kl_bound=0.1)
    assert best is None
    # log-odds that move while no prompt's reading turns: not valid (a reading that calls
    # every harmless prompt a refusal already, rate 1.0, can still rise by a few hundredths)
    still = [AblationEffect(1, 9.1, 6.6, 1.0, 1.0, 0.004)]
    saturated = [AdditionEffect(1, 8.70, 8.73, 1.0, 1.0)]
    best, effects = select_layer(still, saturated, kl_bound=0.1)
    assert best is None and not effects[0].valid and effects[0].score > 0
    released = [AblationEffect(1, 9.1, 6.6, 1.0, 0.5, 0.004)]
    best, _ = select_layer(released, saturated, kl_bound=0.1)
    assert best is None  # the addition still turns no harmless prompt
    best, _ = select_layer(released, [AdditionEffect(1, -2.0, 1.0, 0.0, 0.6)], kl_bound=0.1)
    assert best is not None and best.layer == 1


def test_candidate_layers_are_evenly_spaced_and_capped() -> None:
    # SmolLM2's 30 layers: the first 24 are candidates; six of them keep both ends
    assert candidate_layers(30, 0.2) == list(range(24))
    assert candidate_layers(30, 0.2, 6) == [0, 5, 9, 14, 18, 23]
    assert candidate_layers(30, 0.2, 1) == [12]
    assert candidate_layers(6, 0.2, 10) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="causal_layers"):
        DirectionsConfig(causal_layers=0)
