"""The attention locator: modules, projections and head layout of every supported architecture,
found from the config and the module tree, and checked against what the heads compute."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig

from probes.focal import capture_last_rows, eager_attention
from probes.heads import HeadLayout, find_attention
from surgeon.errors import InputError
from surgeon.testing import ARCHITECTURES, N_HEADS, N_LAYERS, tiny_model, tiny_tokenizer
from surgeon.tokens import encode

EXPECTED = {  # arch -> (attention, o, q, k, v, fused qkv), leaf names; kv heads
    "llama": ("self_attn", "o_proj", "q_proj", "k_proj", "v_proj", None, 2),
    "qwen2": ("self_attn", "o_proj", "q_proj", "k_proj", "v_proj", None, 2),
    "mistral": ("self_attn", "o_proj", "q_proj", "k_proj", "v_proj", None, 2),
    "gemma2": ("self_attn", "o_proj", "q_proj", "k_proj", "v_proj", None, 2),
    "gpt2": ("attn", "c_proj", None, None, None, "c_attn", 4),
    "phi3": ("self_attn", "o_proj", None, None, None, "qkv_proj", 4),
    "gpt_neox": ("attention", "dense", None, None, None, "query_key_value", 4),
}
UNFUSED = ("llama", "qwen2", "mistral", "gemma2")
TEXT = (
    "<s><|system|> never mention blue <|end|> <|user|> tell me about the sky <|end|> <|assistant|>"
)


def _leaf(name: str | None) -> str | None:
    return None if name is None else name.rsplit(".", 1)[-1]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_finds_every_layer_and_the_head_layout(arch: str) -> None:
    model = tiny_model(arch)
    amap = find_attention(model)
    attn, o, q, k, v, qkv, n_kv = EXPECTED[arch]
    assert amap.n_layers == N_LAYERS
    assert amap.layout == HeadLayout(N_HEADS, n_kv, 16)
    for i, site in enumerate(amap.sites):
        assert site.layer == i
        assert site.name.endswith(f".{i}.{attn}")
        assert (_leaf(site.o_proj), _leaf(site.q_proj), _leaf(site.k_proj)) == (o, q, k)
        assert (_leaf(site.v_proj), _leaf(site.qkv_proj)) == (v, qkv)
        assert site.fused == (qkv is not None)
        assert model.get_submodule(site.name) is site.module
        assert model.get_submodule(site.o_proj) is site.output_projection
    assert len(amap.all_heads()) == N_LAYERS * N_HEADS


def test_gqa_group_mapping() -> None:
    lay = HeadLayout(n_heads=4, n_kv_heads=2, head_dim=16)
    assert [lay.kv_group(h) for h in range(4)] == [0, 0, 1, 1]
    assert lay.head_slice(2) == slice(32, 48)
    assert lay.kv_slice(1) == slice(16, 32)
    assert [HeadLayout(6, 3, 8).kv_group(h) for h in range(6)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(InputError, match="do not split evenly"):
        HeadLayout(n_heads=4, n_kv_heads=3, head_dim=16)
    with pytest.raises(ValueError):
        lay.kv_group(4)


@pytest.mark.parametrize("arch", UNFUSED)
def test_layout_matches_what_the_heads_compute(arch: str) -> None:
    """Zero query head h's queries: its attention row becomes uniform, and its slice of the
    output projection's input becomes the mean of its key/value group's values. This ties
    the query head index of the pattern, the o_proj input slice and the kv group together."""
    torch.manual_seed(0)
    model = tiny_model(arch)
    amap = find_attention(model)
    lay, site = amap.layout, amap.sites[1]
    head = 3 if lay.n_kv_heads > 1 else 1
    q_proj = model.get_submodule(site.projection("q"))
    k_proj = model.get_submodule(site.projection("k"))
    with torch.no_grad():
        q_proj.weight.mul_(20)  # sharp patterns, so the other heads are clearly not uniform
        k_proj.weight.mul_(20)
        q_proj.weight[lay.head_slice(head)] = 0
        if q_proj.bias is not None:
            q_proj.bias[lay.head_slice(head)] = 0
    seen: dict[str, torch.Tensor] = {}
    v_hook = model.get_submodule(site.projection("v")).register_forward_hook(
        lambda _m, _a, out: seen.__setitem__("v", out)
    )
    o_hook = site.output_projection.register_forward_pre_hook(
        lambda _m, args: seen.__setitem__("z", args[0])
    )
    enc = encode(tiny_tokenizer(), [TEXT])
    try:
        with eager_attention(model), capture_last_rows(amap.sites) as store:
            model(**enc, use_cache=False)
    finally:
        v_hook.remove()
        o_hook.remove()
    row = store[1][0][0]  # [n_heads, n_keys]
    n_keys = row.shape[-1]
    uniform = torch.full((n_keys,), 1.0 / n_keys)
    torch.testing.assert_close(row[head], uniform)
    others = [h for h in range(lay.n_heads) if h != head]
    assert all((row[h] - uniform).abs().max() > 1e-3 for h in others)
    values = seen["v"][0].view(n_keys, lay.n_kv_heads, lay.head_dim)
    expected = values[:, lay.kv_group(head)].mean(0)
    torch.testing.assert_close(seen["z"][0, -1, lay.head_slice(head)], expected)
    wrong_group = values[:, 1 - lay.kv_group(head)].mean(0)
    assert (seen["z"][0, -1, lay.head_slice(head)] - wrong_group).abs().max() > 1e-3


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_target_modules_place_lora_on_the_chosen_layers(arch: str) -> None:
    model = tiny_model(arch)
    amap = find_attention(model)
    targets = amap.target_modules([1, 3])
    assert len(targets) == (4 if amap.sites[0].fused else 8)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=targets))
    with_lora = {
        name.removeprefix("base_model.model.")
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_A") and len(module.lora_A)
    }
    assert with_lora == set(targets)
    # the locator sees through the wrapper and names the same modules
    again = find_attention(peft_model)
    assert again.target_modules([1, 3]) == targets
    assert amap.target_modules([2], kinds=("o",)) == [amap.sites[2].o_proj]


class _Mixer(nn.Module):
    def __init__(self, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        for name, (d_in, d_out) in zip(
            "abcd",
            [(64, widths[0]), (64, widths[1]), (64, widths[2]), (widths[3], 64)],
            strict=True,
        ):
            self.add_module(f"w{name}", nn.Linear(d_in, d_out))


class _Block(nn.Module):
    def __init__(self, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.mixer = _Mixer(widths)
        self.ff = nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 64))


class _Toy(nn.Module):
    """A model whose attention projections carry no usual names (wa, wb, wc, wd)."""

    def __init__(self, n_kv: int) -> None:
        super().__init__()
        self.config = LlamaConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=n_kv
        )
        kv = 16 * n_kv
        self.blocks = nn.ModuleList([_Block((64, kv, kv, 64)) for _ in range(2)])


@pytest.mark.parametrize("n_kv", [4, 2])
def test_unhinted_names_fall_back_to_shapes_and_registration_order(n_kv: int) -> None:
    site = find_attention(_Toy(n_kv)).sites[1]
    assert site.name == "blocks.1.mixer"
    names = (site.q_proj, site.k_proj, site.v_proj, site.o_proj)
    assert names == tuple(f"blocks.1.mixer.w{c}" for c in "abcd")


def test_discovery_failure_says_what_was_expected() -> None:
    model = tiny_model("llama")
    model.config.head_dim = 8  # the config no longer matches the modules
    with pytest.raises(InputError, match=r"layer 0 .*output projection \[4x8 -> 64\].*head_dim"):
        find_attention(model)
    model = tiny_model("gpt2")
    model.transformer.h[2].attn = nn.Identity()
    with pytest.raises(InputError, match="decoder layer 2"):
        find_attention(model)
