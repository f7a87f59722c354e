"""Every supported architecture loads from a local directory, formats chat, generates, and is
found by structure (layers, heads, residual stream), never by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from surgeon.architecture import ModelSpec, find_layers
from surgeon.chat import format_prompt, system_token_span
from surgeon.generation import generate
from surgeon.judges import FirstTokenScorer
from surgeon.loading import LoadOptions, load_model
from surgeon.testing import ARCHITECTURES, N_HEADS, N_LAYERS, save_tiny


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def tiny_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = request.param
    return save_tiny(tmp_path_factory.mktemp(arch) / "model", arch)


def test_loads_and_finds_structure(tiny_dir: Path) -> None:
    loaded = load_model(tiny_dir)
    assert loaded.source.kind == "hf_dir"
    assert loaded.spec.n_layers == N_LAYERS
    assert loaded.spec.n_heads == N_HEADS
    layers = find_layers(loaded.model)
    assert len(layers.layers) == N_LAYERS
    name = next(n for n, _ in loaded.model.named_parameters() if f"{layers.prefix}.2." in n)
    assert layers.index_of(name) == 2
    # the residual stream after each layer has the width the spec names
    enc = loaded.tokenizer(["<s> tell me about cake"], return_tensors="pt")
    with torch.no_grad():
        out = loaded.model(**enc, output_hidden_states=True)
    assert len(out.hidden_states) == N_LAYERS + 1
    assert out.hidden_states[-1].shape[-1] == loaded.spec.d_model


def test_chat_generation_and_refusal_score(tiny_dir: Path) -> None:
    loaded = load_model(tiny_dir)
    fp = format_prompt(loaded.tokenizer, "tell me about cake", system="never mention blue")
    assert fp.text.endswith("<|assistant|>")
    span = system_token_span(loaded.tokenizer, fp)
    assert span is not None
    ids = loaded.tokenizer(fp.text, add_special_tokens=False)["input_ids"]
    assert loaded.tokenizer.decode(ids[span[0] : span[1]]).split() == ["never", "mention", "blue"]
    texts = [fp.text, format_prompt(loaded.tokenizer, "hi").text]
    first = generate(loaded.model, loaded.tokenizer, texts, max_new_tokens=4, batch_size=2)
    again = generate(loaded.model, loaded.tokenizer, texts, max_new_tokens=4, batch_size=1)
    assert first == again  # left padding: batched equals one-by-one, and deterministic
    scores = FirstTokenScorer(loaded.tokenizer).scores(loaded.model, texts)
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_bridge_view_matches_hidden_states(tiny_dir: Path) -> None:
    from surgeon.bridge import hookable, resid_hook_name

    loaded = load_model(tiny_dir)
    bridge = hookable(loaded)
    toks = loaded.tokenizer(["<s> tell me about cake"], return_tensors="pt").input_ids
    _, cache = bridge.run_with_cache(toks)
    with torch.no_grad():
        hidden = loaded.model(toks, output_hidden_states=True).hidden_states
    # hidden_states[l + 1] is the residual stream after layer l (the last one is normed by HF)
    torch.testing.assert_close(cache[resid_hook_name(1)], hidden[2])


def test_sharded_checkpoint(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "sharded", "llama", max_shard_size="50KB")
    assert (path / "model.safetensors.index.json").exists()
    loaded = load_model(path)
    single = load_model(save_tiny(tmp_path / "single", "llama"))
    for (n1, p1), (n2, p2) in zip(
        loaded.model.named_parameters(), single.model.named_parameters(), strict=True
    ):
        assert n1 == n2
        torch.testing.assert_close(p1, p2)


def test_spec_from_nested_text_config() -> None:
    from types import SimpleNamespace

    inner = SimpleNamespace(
        model_type="x", num_hidden_layers=3, num_attention_heads=2, hidden_size=8
    )
    spec = ModelSpec.from_config(SimpleNamespace(text_config=inner))
    assert (spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.head_dim) == (3, 2, 2, 4)


def test_dtype_option(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "m", "llama")
    loaded = load_model(path, options=LoadOptions(dtype="bfloat16"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_adapter_directory(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base = save_tiny(tmp_path / "base", "llama")
    model = load_model(base).model
    torch.manual_seed(1)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    merged_ref = peft_model.merge_and_unload()
    loaded = load_model(tmp_path / "adapter", base=base)
    assert loaded.source.kind == "adapter"
    enc = loaded.tokenizer(["<s> tell me about cake"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**enc).logits, merged_ref(**enc).logits)
    separate = load_model(tmp_path / "adapter", base=base, merge_adapter=False)
    assert hasattr(separate.model, "disable_adapter")
