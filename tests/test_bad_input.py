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


# ---------------------------------------------------------------------------------------------
# non-finite weights, out of memory, input directories, tokenizers left alone


def test_nan_in_a_bin_checkpoint_is_found_after_loading(tmp_path: Path) -> None:
    """Weights no safetensors scan covers (pytorch_model.bin) are checked in memory."""
    from surgeon.testing import tiny_model, tiny_tokenizer

    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 3] = float("nan")
    (tmp_path / "bin").mkdir()
    model.config.save_pretrained(tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    tiny_tokenizer().save_pretrained(tmp_path / "bin")
    assert not list((tmp_path / "bin").glob("*.safetensors"))
    before = tree_hash(tmp_path / "bin")
    with pytest.raises(
        InputError,
        match=r"bin: weight model.layers.1.mlp.down_proj.weight holds non-finite values "
        r"\(1 NaN of 8192 entries\)",
    ):
        load_model(tmp_path / "bin")
    assert tree_hash(tmp_path / "bin") == before


def test_finite_scan_is_not_repeated_but_sees_a_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    import surgeon.safetensors_io as sio

    path = save_tiny(tmp_path / "m")
    scanned: list[str] = []
    real = sio._scan_tensor
    monkeypatch.setattr(sio, "_scan_tensor", lambda h, n: scanned.append(n) or real(h, n))
    resolve_source(path)
    n_tensors = len(scanned)
    assert n_tensors == len(sio.tensor_index(path))
    resolve_source(path)
    load_model(path)
    assert len(scanned) == n_tensors  # one pass per file and process
    file = path / "model.safetensors"
    with safe_open(str(file), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    tensors["model.norm.weight"][0] = float("inf")
    save_file(tensors, str(file), metadata=meta)
    with pytest.raises(InputError, match=r"tensor model\.norm\.weight holds non-finite values"):
        resolve_source(path)


def test_scan_in_chunks_counts_every_entry(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from safetensors.torch import save_file

    import surgeon.safetensors_io as sio

    values = torch.zeros(10, 7)
    values[0, 0] = values[9, 6] = float("nan")
    values[5, 2] = float("-inf")
    save_file({"w": values, "n": torch.arange(4)}, str(tmp_path / "x.safetensors"))
    monkeypatch.setattr(sio, "SCAN_CHUNK", 14)  # two rows per chunk
    with pytest.raises(InputError, match=r"tensor w .*\(2 NaN and 1 infinite of 70 entries\)"):
        sio.check_finite(tmp_path / "x.safetensors")


def test_out_of_memory_at_load_is_a_runtime_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from surgeon.errors import RuntimeFailure
    from surgeon.loading import OOM_ADVICE, is_out_of_memory

    path = save_tiny(tmp_path / "m")

    def oom(*_a: object, **_k: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB. More")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", oom)
    with pytest.raises(RuntimeFailure) as info:
        load_model(path)
    assert str(info.value) == (
        f"{path}: loading the model: out of memory (CUDA out of memory. Tried to allocate "
        f"1 GiB); {OOM_ADVICE}"
    )
    assert info.value.exit_code == 3
    monkeypatch.undo()

    def to_fails(self: torch.nn.Module, *_a: object, **_k: object) -> None:
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(LlamaForCausalLM, "to", to_fails)
    with pytest.raises(RuntimeFailure, match="out of memory"):
        load_model(path)
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("size mismatch for lm_head.weight"))


def test_input_dirs_include_an_adapters_recorded_base(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from surgeon.loading import input_dirs

    base = save_tiny(tmp_path / "base", "llama")
    peft_model = get_peft_model(load_model(base).model, LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    other = save_tiny(tmp_path / "other", "llama", seed=3)
    assert input_dirs(tmp_path / "adapter") == (tmp_path / "adapter", base)
    assert input_dirs(tmp_path / "adapter", other) == (tmp_path / "adapter", other)
    assert input_dirs(base) == (base,)


def test_tokenizer_is_never_modified() -> None:
    from surgeon.generation import generate
    from surgeon.testing import tiny_model, tiny_tokenizer
    from surgeon.tokens import encode, prepare_tokenizer

    tok = tiny_tokenizer()
    tok.padding_side, tok.pad_token, tok.model_max_length = "right", None, 16
    texts = ["<s> tell me about cake", "<s> hi"]
    prepared = prepare_tokenizer(tok)
    assert prepared is not tok
    assert (prepared.padding_side, prepared.pad_token) == ("left", "</s>")
    left = encode(prepared, texts)
    assert torch.equal(encode(tok, texts)["input_ids"], left["input_ids"])
    generate(tiny_model("llama"), tok, texts, max_new_tokens=2)
    assert (tok.padding_side, tok.pad_token, tok.model_max_length) == ("right", None, 16)
    assert prepare_tokenizer(prepared) is prepared  # already left-padded with a pad token


def test_mask_that_does_not_fit_leaves_the_model_object_alone(tmp_path: Path) -> None:
    from surgeon.repair.mask import RollbackMask, apply_mask, save_mask

    base = save_tiny(tmp_path / "base", "llama", seed=1)
    model = load_model(save_tiny(tmp_path / "m", "llama")).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    name = "model.layers.0.mlp.down_proj.weight"
    wrong = RollbackMask(
        {name: torch.tensor([0, 1]), "model.layers.9.mlp.up_proj.weight": torch.tensor([0])},
        {name: (64, 128), "model.layers.9.mlp.up_proj.weight": (128, 64)},
        10,
    )
    save_mask(wrong, tmp_path / "mask.safetensors")
    with pytest.raises(InputError, match=r"mask.safetensors: rollback mask names model.layers.9"):
        apply_mask(model, base, tmp_path / "mask.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # nothing restored before the check failed
