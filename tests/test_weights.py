"""Weights probe: streamed per-module deltas, sharding, LoRA adapters, mismatches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from probes.weights import WeightsConfig, compare_weights, layer_of, module_type_of, top_k_energy
from surgeon.errors import InputError
from surgeon.testing import ARCHITECTURES, save_tiny, tiny_model, tiny_tokenizer

TARGET = "model.layers.2.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("base"), "llama", seed=0)


def _perturbed(directory: Path, rank1: bool = False, **save: str) -> tuple[Path, torch.Tensor]:
    """The base model with only TARGET changed; returns the dir and the delta."""
    model = tiny_model("llama", seed=0)
    param = dict(model.named_parameters())[TARGET]
    g = torch.Generator().manual_seed(1)
    if rank1:
        delta = torch.outer(torch.randn(param.shape[0], generator=g), torch.randn(param.shape[1]))
    else:
        delta = 0.01 * torch.randn(param.shape, generator=g)
    with torch.no_grad():
        param += delta
    model.save_pretrained(directory, **save)
    tiny_tokenizer().save_pretrained(directory)
    return directory, delta


def test_names_layers_and_types() -> None:
    assert layer_of("model.layers.12.self_attn.o_proj.weight") == 12
    assert layer_of("transformer.h.3.attn.c_proj.weight") == 3
    assert layer_of("model.embed_tokens.weight") is None
    assert module_type_of("model.layers.12.self_attn.o_proj.weight") == "o_proj"
    assert module_type_of("lm_head.weight") == "lm_head"


def test_base_versus_itself(base_dir: Path) -> None:
    res = compare_weights(base_dir, base_dir)
    assert res.modules and all(m.rel_delta == 0.0 for m in res.modules)
    assert all(m.changed_fraction == 0.0 and m.top_k_energy is None for m in res.modules)
    assert res.changed_fraction == 0.0 and res.n_changed == 0
    assert res.most_changed_layers == ()
    assert res.n_params == sum(p.numel() for p in tiny_model("llama").parameters())


@pytest.mark.parametrize("shard", [False, True])
def test_one_perturbed_module(base_dir: Path, tmp_path: Path, shard: bool) -> None:
    save = {"max_shard_size": "40KB"} if shard else {}
    model_dir, delta = _perturbed(tmp_path / "ft", **save)
    if shard:
        assert len(list(model_dir.glob("*.safetensors"))) > 1
    res = compare_weights(model_dir, base_dir)
    base_w = dict(tiny_model("llama", seed=0).named_parameters())[TARGET].detach()
    by_name = {m.name: m for m in res.modules}
    m = by_name[TARGET]
    torch.testing.assert_close(m.rel_delta, float(delta.norm() / base_w.norm()), rtol=1e-5, atol=0)
    assert (m.layer, m.module_type, m.shape) == (2, "down_proj", tuple(base_w.shape))
    changed = int(((base_w + delta) != base_w).sum())
    torch.testing.assert_close(m.changed_fraction, changed / delta.numel())
    assert all(x.rel_delta == 0.0 for name, x in by_name.items() if name != TARGET)
    assert res.most_changed_layers == (2,)
    assert res.n_changed == changed
    torch.testing.assert_close(res.changed_fraction, changed / res.n_params)
    # a dense random delta spreads its energy: top-8 of 64 directions hold well under 1
    assert m.top_k_energy is not None and 0.1 < m.top_k_energy < 0.6


def test_rank_one_delta_energy_exact_and_low_rank(base_dir: Path, tmp_path: Path) -> None:
    model_dir, _ = _perturbed(tmp_path / "ft", rank1=True)
    exact = {m.name: m for m in compare_weights(model_dir, base_dir).modules}[TARGET]
    approx_cfg = WeightsConfig(svd_max_dim=8)  # forces torch.svd_lowrank
    approx = {m.name: m for m in compare_weights(model_dir, base_dir, approx_cfg).modules}[TARGET]
    torch.testing.assert_close(exact.top_k_energy, 1.0, atol=1e-5, rtol=0)
    torch.testing.assert_close(approx.top_k_energy, 1.0, atol=1e-4, rtol=0)
    d = torch.randn(300, 200, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(d)
    torch.testing.assert_close(
        top_k_energy(d, 8, 1024), float(s[:8].square().sum() / s.square().sum())
    )
    assert top_k_energy(torch.zeros(4, 4), 2, 1024) is None


def test_mismatched_base_is_an_input_error(base_dir: Path, tmp_path: Path) -> None:
    config = ARCHITECTURES["llama"](len(tiny_tokenizer()))
    config.intermediate_size = 96
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "other")
    with pytest.raises(InputError, match=str(tmp_path / "other")):
        compare_weights(base_dir, tmp_path / "other")
    with pytest.raises(InputError, match=str(base_dir)):
        compare_weights(tmp_path / "other", base_dir)
    tied = ARCHITECTURES["llama"](len(tiny_tokenizer()))
    tied.tie_word_embeddings = True
    AutoModelForCausalLM.from_config(tied).save_pretrained(tmp_path / "tied")
    with pytest.raises(InputError, match=rf"{tmp_path / 'tied'}.*lm_head"):
        compare_weights(base_dir, tmp_path / "tied")


@pytest.mark.parametrize(
    "options",
    [
        {"target_modules": ["q_proj", "v_proj", "down_proj"]},
        {"target_modules": ["o_proj", "embed_tokens"], "use_rslora": True, "lora_alpha": 16},
    ],
)
def test_lora_adapter_delta_equals_merged_minus_base(
    base_dir: Path, tmp_path: Path, options: dict
) -> None:
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    options = {"r": 4, "lora_alpha": 8, "init_lora_weights": False, **options}
    torch.manual_seed(3)
    peft_model = get_peft_model(base, LoraConfig(**options))
    peft_model.save_pretrained(tmp_path / "adapter")
    res = compare_weights(tmp_path / "adapter", base_dir)
    merged = peft_model.merge_and_unload().state_dict()
    assert res.adapter
    changed = {k for k in base_sd if not torch.equal(merged[k], base_sd[k])}
    assert {m.name for m in res.modules} == changed
    for m in res.modules:
        want = float((merged[m.name] - base_sd[m.name]).norm() / base_sd[m.name].norm())
        torch.testing.assert_close(m.rel_delta, want, rtol=1e-4, atol=1e-7)
        assert m.top_k_energy is not None
        torch.testing.assert_close(m.top_k_energy, 1.0, atol=1e-4, rtol=0)  # rank 4 <= k = 8
    assert set(res.most_changed_layers) <= {0, 1, 2, 3} and res.most_changed_layers
    n_changed = sum(int((merged[k] != base_sd[k]).sum()) for k in changed)
    assert abs(res.n_changed - n_changed) <= n_changed * 1e-3  # float rounding of tiny entries


def test_config_validation() -> None:
    for bad in ({"tol": -1.0}, {"top_k": 0}, {"svd_max_dim": 0}, {"n_most_changed": 0}):
        with pytest.raises(ValueError):
            WeightsConfig(**bad)


def test_bf16_pair_matches_fp32_reference(base_dir: Path, tmp_path: Path) -> None:
    """Non-float32 checkpoints go through the conversion path and give the same record."""
    model_dir, _ = _perturbed(tmp_path / "ft")
    for d, name in ((base_dir, "base16"), (model_dir, "ft16")):
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16)
        m.save_pretrained(tmp_path / name)
    res = {m.name: m for m in compare_weights(tmp_path / "ft16", tmp_path / "base16").modules}
    base_w = dict(tiny_model("llama", seed=0).named_parameters())[TARGET].detach()
    ft_w = dict(AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())[TARGET]
    b16, f16 = base_w.bfloat16().float(), ft_w.detach().bfloat16().float()
    want = float((f16 - b16).norm() / b16.norm())
    torch.testing.assert_close(res[TARGET].rel_delta, want, rtol=1e-5, atol=0)
    assert all(x.rel_delta == 0.0 for n, x in res.items() if n != TARGET)


def test_reader_maps_tensors_exactly_and_releases_them(base_dir: Path) -> None:
    """Each tensor read through its own mapping equals the loaded model's, and the mapping goes
    away with the tensor (nothing of the file stays mapped)."""
    import gc
    from contextlib import ExitStack

    from probes.weights import _Reader
    from surgeon.safetensors_io import tensor_index

    params = dict(tiny_model("llama", seed=0).state_dict())
    index = tensor_index(base_dir)
    with ExitStack() as stack:
        reader = _Reader(stack)
        items = [(n, info, info) for n, info in index.items()]
        seen = 0
        for name, a, b in reader.pairs(items):
            assert torch.equal(a, params[name]) and torch.equal(b, params[name])
            seen += 1
        assert seen == len(index)
        del a, b
        gc.collect()
        file = str(index[TARGET].file)

        def mapped() -> int:
            return Path("/proc/self/maps").read_text().count(file)

        assert mapped() == 0
        t = reader.get(index[TARGET])
        assert mapped() == 1
        del t
        gc.collect()
        assert mapped() == 0
