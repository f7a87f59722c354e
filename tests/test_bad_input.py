"""Bad input is an InputError naming the file and the problem, and input dirs stay untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from surgeon.errors import InputError
from surgeon.loading import LoadOptions, check_compatible, load_model, resolve_source
from surgeon.testing import save_tiny, tree_hash


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such model directory"):
        resolve_source(tmp_path / "missing")


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: not a model directory \(no config.json"):
        resolve_source(tmp_path / "empty")


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "m")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"model.safetensors: truncated safetensors file"):
        load_model(path)


def test_garbage_safetensors(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "m")
    (path / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(InputError, match=r"model.safetensors: not a valid safetensors"):
        load_model(path)


def test_base_architecture_mismatch(tmp_path: Path) -> None:
    model = save_tiny(tmp_path / "llama", "llama")
    other = save_tiny(tmp_path / "gpt2", "gpt2")
    with pytest.raises(InputError, match=r"gpt2: base does not match the model: model_type"):
        check_compatible(resolve_source(model), resolve_source(other))


def test_base_shape_mismatch(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from surgeon.testing import tiny_tokenizer

    model = save_tiny(tmp_path / "a", "llama")
    cfg = LlamaConfig.from_pretrained(model)
    cfg.intermediate_size = 96
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "b")
    tiny_tokenizer().save_pretrained(tmp_path / "b")
    with pytest.raises(InputError, match=r"b: base does not match the model: .*mlp.* has shape"):
        check_compatible(resolve_source(model), resolve_source(tmp_path / "b"))


def test_adapter_on_wrong_base(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base = save_tiny(tmp_path / "base", "llama")
    peft_model = get_peft_model(load_model(base).model, LoraConfig(r=4, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    wrong = save_tiny(tmp_path / "wrong", "gpt2")
    with pytest.raises(InputError, match="adapter does not fit base"):
        load_model(tmp_path / "adapter", base=wrong)


def test_adapter_without_base_record(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(InputError, match="does not record its base model; pass --base"):
        resolve_source(adapter)


def test_bad_options() -> None:
    with pytest.raises(InputError, match="--dtype"):
        LoadOptions(dtype="float8")
    with pytest.raises(InputError, match="--device"):
        LoadOptions(device="tpu")


def test_loading_never_writes_inputs(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "m")
    before = tree_hash(path)
    load_model(path)
    assert tree_hash(path) == before


def test_mask_beside_weights_is_not_a_weight_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from surgeon.safetensors_io import tensor_index, weight_files

    path = save_tiny(tmp_path / "m")
    save_file(
        {"model.layers.0.mlp.down_proj.weight": torch.arange(3)}, path / "rollback_mask.safetensors"
    )
    assert [f.name for f in weight_files(path)] == ["model.safetensors"]
    assert tensor_index(path)["model.layers.0.mlp.down_proj.weight"].shape != (3,)
    check_compatible(resolve_source(path), resolve_source(path))
