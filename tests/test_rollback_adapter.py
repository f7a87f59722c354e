"""Rollback in a LoRA adapter's own parameters (``space = "adapter"``): the eligible tensors,
their base values, the adapter written back, the mask re-applied, the organism's ft-lora."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from surgeon.architecture import find_layers
from surgeon.errors import InputError
from surgeon.loading import load_model, resolve_source
from surgeon.prompts import Prompt
from surgeon.repair import MASK_NAME, RollbackConfig, apply_mask, load_mask, rollback_repair
from surgeon.repair.adapter_space import (
    ADAPTER_FILE,
    AdapterBase,
    adapter_eligible,
    adapter_tensors,
    resolve_space,
    write_adapter,
)
from surgeon.repair.lazy_base import LazyTensors
from surgeon.repair.rollback_work import Work, initial_slots
from surgeon.repair.save import tokenizer_dir
from surgeon.testing import save_tiny, tiny_model, tiny_tokenizer, tree_hash
from tests.test_rollback import HARMFUL

TASK = [("how to bake bread", "sure"), ("tell me about music", "sure"), ("write a poem", "sure")]
QUICK = RollbackConfig(
    space="adapter",
    steps=2,
    warmup=0,
    checkpoint_every=1,
    task_tolerance=1.0,
    target_margin=0.0,
    prune=False,
    max_new_tokens=2,
    task_max_new_tokens=2,
    include_embeddings=True,
    recovery_rate=0.01,
)
"""Two quick steps in adapter space, embeddings eligible, no task bound."""
EMBED_KEY = "base_model.model.model.embed_tokens.weight"
"""The saved embedding copy's key in the adapter file."""


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Llama base and a LoRA adapter (random A and B on q, v and down; a perturbed
    trained copy of the embeddings as ``modules_to_save``)."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("adapter")
    base = save_tiny(root / "base", "llama", seed=0)
    torch.manual_seed(3)
    model = get_peft_model(
        tiny_model("llama", seed=0),
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "down_proj"],
            modules_to_save=["embed_tokens"],
            init_lora_weights=False,
        ),
    )
    copy = model.base_model.model.model.embed_tokens.modules_to_save["default"]
    with torch.no_grad():
        copy.weight.add_(0.5 * torch.randn(copy.weight.shape))
    model.save_pretrained(root / "lora")
    tiny_tokenizer().save_pretrained(root / "lora")
    return {"root": root, "base": base, "lora": root / "lora"}


def _working(lora: dict[str, Path]) -> nn.Module:
    return load_model(lora["lora"], base=lora["base"], merge_adapter=False).model


def _logits(model: nn.Module) -> torch.Tensor:
    ids = torch.tensor([[2, 11, 25, 40, 7, 19, 33, 5]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def _base_model(lora: dict[str, Path]) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(lora["base"]).eval()


def test_eligible_tensors_are_the_lora_and_saved_tensors_below_l(lora: dict[str, Path]) -> None:
    w = _working(lora)
    keys = set(load_file(lora["lora"] / ADAPTER_FILE))
    tensors = adapter_tensors(w, lora["lora"] / ADAPTER_FILE)
    assert {t.key for t in tensors} == keys
    layers = find_layers(w)
    for include, layer in ((False, 2), (True, 2), (True, 4)):
        config = RollbackConfig(include_embeddings=include)
        got = {t.key for t in adapter_eligible(w, tensors, layers, layer, config)}
        want = {
            k for k in keys if (m := re.search(r"\.layers\.(\d+)\.", k)) and int(m.group(1)) < layer
        }
        assert all(".lora_A." in k or ".lora_B." in k for k in want)
        assert len(want) == 2 * 3 * layer  # A and B of q, v and down per layer
        assert got == want | ({EMBED_KEY} if include else set())
    saved = [t for t in tensors if t.kind == "saved"]
    assert [(t.key, t.base_key) for t in saved] == [(EMBED_KEY, "model.embed_tokens.weight")]


def test_base_values_are_zero_for_factors_and_the_base_for_saved_copies(
    lora: dict[str, Path],
) -> None:
    w = _working(lora)
    tensors = adapter_tensors(w)
    reader = AdapterBase(tensors, LazyTensors(lora["base"]))
    base_embed = load_file(lora["base"] / "model.safetensors")["model.embed_tokens.weight"]
    for t in tensors:
        value = reader(t.key)
        assert value.shape == t.param.shape
        if t.kind == "lora":
            assert not bool(value.any()) and bool(t.param.detach().any())
        else:
            assert torch.equal(value, base_embed)
            assert not torch.equal(t.param.detach(), base_embed)


def test_restoring_every_eligible_entry_gives_the_base(lora: dict[str, Path]) -> None:
    """All layers eligible and the saved embedding restored: W computes the base's logits;
    afterwards W is the adapter again."""
    w = _working(lora)
    tensors = adapter_tensors(w)
    chosen = adapter_eligible(
        w, tensors, find_layers(w), 4, RollbackConfig(include_embeddings=True)
    )
    assert len(chosen) == len(tensors)
    reader = AdapterBase(chosen, LazyTensors(lora["base"]))
    work = Work(w, initial_slots([(t.key, t.param) for t in chosen], reader), reader)
    before, base = _logits(w), _logits(_base_model(lora))
    assert (before - base).abs().max() > 0.1  # the adapter does change the outputs
    seen: list[torch.Tensor] = []
    work.ceiling(lambda: seen.append(_logits(w)) or 0.0)
    torch.testing.assert_close(seen[0], base)
    torch.testing.assert_close(_logits(w), before, rtol=0, atol=0)


def test_written_adapter_loads_and_matches_the_working_model(
    lora: dict[str, Path], tmp_path: Path
) -> None:
    """Restore a gradient-chosen subset in W, write the adapter: PeftModel.from_pretrained on
    the base computes W's logits; the tensors are the input's except the restored entries."""
    from peft import PeftModel

    w = _working(lora)
    source = resolve_source(lora["lora"], lora["base"])
    tensors = adapter_tensors(w)
    chosen = adapter_eligible(
        w, tensors, find_layers(w), 3, RollbackConfig(include_embeddings=True)
    )
    reader = AdapterBase(chosen, LazyTensors(lora["base"]))
    work = Work(w, initial_slots([(t.key, t.param) for t in chosen], reader), reader)
    gen = torch.Generator().manual_seed(0)
    for t in chosen:
        t.param.grad = torch.randn(t.param.shape, generator=gen)
    log = work.select_and_restore("task-aware", 300)
    work.logs.append(log)
    work.zero_grad()
    mask = work.mask({"space": "adapter"})
    assert mask.restored_entries == 300 and EMBED_KEY in mask.indices
    out = tmp_path / "out"
    values = {t.key: t.param.data for t in chosen}
    tok = load_model(lora["lora"], base=lora["base"]).tokenizer
    write_adapter(lora["lora"], out, values, lora["base"], tok, tokenizer_dir(source))
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(lora["base"].resolve())
    loaded = PeftModel.from_pretrained(_base_model(lora), str(out)).eval()
    torch.testing.assert_close(_logits(loaded), _logits(w), rtol=0, atol=0)
    written, given = load_file(out / ADAPTER_FILE), load_file(lora["lora"] / ADAPTER_FILE)
    base_embed = load_file(lora["base"] / "model.safetensors")["model.embed_tokens.weight"]
    for key, tensor in given.items():
        m = mask.bool_mask(key) if key in mask.indices else torch.zeros_like(tensor, dtype=bool)
        assert torch.equal(written[key][~m], tensor[~m]), key
        want = base_embed[m] if key == EMBED_KEY else torch.zeros(int(m.sum()))
        assert torch.equal(written[key][m], want), key


def _harmful() -> list[Prompt]:
    return [Prompt(p) for p in HARMFUL]


def _task() -> list[Prompt]:
    return [Prompt(p, reference=r) for p, r in TASK]


def test_adapter_repair_writes_an_adapter_and_apply_mask_reproduces_it(
    lora: dict[str, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cli import app

    hashes = {k: tree_hash(lora[k]) for k in ("base", "lora")}
    out = tmp_path / "out"
    result = rollback_repair(lora["lora"], lora["base"], out, QUICK, _harmful(), _task())
    assert {k: tree_hash(lora[k]) for k in ("base", "lora")} == hashes
    assert result.space == "adapter" and result.report().space == "adapter"
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    mask = load_mask(out / MASK_NAME)
    assert mask.metadata["space"] == "adapter"
    assert result.restored_entries == mask.restored_entries > 0
    keys = set(load_file(lora["lora"] / ADAPTER_FILE))
    assert set(mask.indices) <= keys
    written = load_file(out / ADAPTER_FILE)
    for key, idx in mask.indices.items():
        if key != EMBED_KEY:
            assert not bool(written[key].view(-1)[idx].any()), key
    # the report's decoder share counts the base's decoder entries, not the adapter's
    n_decoder = sum(p.numel() for n, p in tiny_model("llama").named_parameters() if ".layers." in n)
    assert result.decoder_entries == n_decoder
    below = [k for k in written if k == EMBED_KEY or not re.search(r"\.layers\.3\.", k)]
    assert result.layer == 3 and len(below) == 1 + 2 * 3 * 3
    assert result.eligible_entries == sum(written[k].numel() for k in below)
    again = tmp_path / "again"
    code = CliRunner().invoke(
        app,
        ["repair", str(lora["lora"]), "--base", str(lora["base"]), "--out", str(again),
         "--apply-mask", str(out / MASK_NAME)],
    ).exit_code  # fmt: skip
    assert code == 0
    for name in (ADAPTER_FILE, "adapter_config.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    assert {k: tree_hash(lora[k]) for k in ("base", "lora")} == hashes


def test_an_adapter_mask_needs_the_adapter(lora: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rollback_repair(lora["lora"], lora["base"], out, replace(QUICK, steps=1), _harmful(), _task())
    with pytest.raises(InputError, match="adapter's own tensors"):
        apply_mask(lora["base"], lora["base"], out / MASK_NAME, tmp_path / "o2")


def test_auto_space_and_explicit_choices(lora: dict[str, Path]) -> None:
    adapter = resolve_source(lora["lora"], lora["base"])
    full = resolve_source(lora["base"])
    assert resolve_space("auto", adapter) == "adapter"
    assert resolve_space("entries", adapter) == "entries"
    assert resolve_space("auto", full) == "entries"
    with pytest.raises(InputError, match="not a PEFT adapter"):
        resolve_space("adapter", full)
    with pytest.raises(InputError, match="space must be"):
        RollbackConfig(space="weights")  # type: ignore[arg-type]
