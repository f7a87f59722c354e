"""Atomic output directories, provenance records and config.toml."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import sys
import tomllib
from pathlib import Path

import pytest

from surgeon.errors import InputError
from surgeon.outdir import atomic_output_dir, check_output_target, check_writable
from surgeon.provenance import (
    directory_sha256,
    fingerprint,
    provenance,
    to_toml,
    write_config_toml,
    write_provenance,
)


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# ---------------------------------------------------------------------------------------------
# atomic_output_dir


def test_success_renames_temp_into_place(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_output_dir(target) as work:
        assert work.parent == tmp_path
        assert work.name.startswith(".out.tmp-")
        assert not target.exists()  # nothing visible until the run is complete
        (work / "report.json").write_text('{"model": "m"}')
        (work / "plots").mkdir()
        (work / "plots" / "a.png").write_bytes(b"png")
    assert siblings(target) == ["out"]
    assert sorted(p.name for p in target.iterdir()) == ["plots", "report.json"]
    assert json.loads((target / "report.json").read_text())["model"] == "m"
    assert (target / "plots" / "a.png").read_bytes() == b"png"


def test_exception_leaves_no_partial_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), atomic_output_dir(target) as work:
        (work / "report.json").write_text("{}")
        (work / "sub").mkdir()
        (work / "sub" / "weights.bin").write_bytes(b"x" * 100)
        raise RuntimeError("boom")
    assert siblings(target) == []


def test_exception_keeps_existing_target_even_with_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("previous run")
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(target, overwrite=True) as work:
        (work / "new.txt").write_text("half")
        raise KeyboardInterrupt
    assert siblings(target) == ["out"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert (target / "old.txt").read_text() == "previous run"


def test_refuses_non_empty_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with (
        pytest.raises(InputError, match=r"out: directory exists and is not empty"),
        atomic_output_dir(target),
    ):
        pytest.fail("must not get here")
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert siblings(target) == ["out"]


def test_overwrite_replaces_non_empty_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("previous run")
    with atomic_output_dir(target, overwrite=True) as work:
        (work / "new.txt").write_text("fresh")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert siblings(target) == ["out"]  # the moved-aside old directory is gone too


def test_empty_existing_target_is_fine(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out"
    target.mkdir(parents=True)
    with atomic_output_dir(target) as work:
        (work / "x").write_text("1")
    assert (target / "x").read_text() == "1"


def test_missing_parents_are_created(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out"
    with atomic_output_dir(target) as work:
        (work / "x").write_text("1")
    assert (target / "x").read_text() == "1"


def test_target_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("not a dir")
    with pytest.raises(InputError, match="not a directory"):
        check_output_target(target, overwrite=True)
    assert target.read_text() == "not a dir"


def test_refuses_writing_into_an_input_directory(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for target in (model, model / "report", model / "a" / "b"):
        with (
            pytest.raises(InputError, match="inside the input"),
            atomic_output_dir(target, overwrite=True, inputs=[model]),
        ):
            pytest.fail("must not get here")
    with pytest.raises(InputError, match="contains the input"):
        check_output_target(tmp_path, overwrite=True, inputs=[model])
    # a relative or differently spelled path to the same place is caught too
    rel = Path(os.path.relpath(model / "x", Path.cwd()))
    with pytest.raises(InputError, match="inside the input"):
        check_output_target(rel, inputs=[tmp_path / "." / "model"])
    assert sorted(p.name for p in model.iterdir()) == ["config.json"]
    # a sibling is fine
    assert (
        check_output_target(tmp_path / "model-out", inputs=[model])
        == (tmp_path / "model-out").resolve()
    )


def test_temp_directory_honours_umask(tmp_path: Path) -> None:
    with atomic_output_dir(tmp_path / "out") as work:
        mode = work.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask


def test_unusable_targets_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file")
    cases = {
        tmp_path / "o\0ut": "output path contains an embedded null byte",
        tmp_path / "f": "f: exists and is not a directory",
        tmp_path / "f" / "out": f"cannot create it, {tmp_path / 'f'} is a file, not a directory",
        tmp_path / "f" / "a" / "b": f"{tmp_path / 'f'} is a file",
    }
    for target, message in cases.items():
        with pytest.raises(InputError, match=re.escape(message)):
            check_writable(target)
        with pytest.raises(InputError, match=re.escape(message)):
            check_output_target(target, overwrite=True)
    assert siblings(tmp_path / "f") == ["f"]  # no probe or temporary directory left behind


def test_writable_target_leaves_no_probe(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "new" / "deeper") == (tmp_path / "new" / "deeper").resolve()
    assert check_writable(tmp_path) == tmp_path.resolve()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["parent", "grandparent"])
def test_read_only_parent_is_refused_even_for_root(tmp_path: Path, where: str) -> None:
    """The probe, not the permission bits, decides: run where permission bits bind root too."""
    from surgeon.testing import run_unprivileged

    locked = tmp_path / "ro"
    locked.mkdir()
    target = locked / "out" if where == "parent" else locked / "a" / "out"
    code = (
        "import sys\n"
        "from surgeon.errors import InputError\n"
        "from surgeon.outdir import check_writable\n"
        "try:\n"
        "    check_writable(sys.argv[1])\n"
        "except InputError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(2)\n"
    )
    locked.chmod(0o555)
    try:
        proc = run_unprivileged([sys.executable, "-c", code, str(target)])
        writable = run_unprivileged([sys.executable, "-c", code, str(tmp_path / "ok")])
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.strip() == (
        f"{target}: cannot create the output directory in {locked} (Permission denied)"
    )
    assert writable.returncode == 0, writable.stdout + writable.stderr
    assert list(locked.iterdir()) == []


def test_save_like_leaves_the_model_alone(tmp_path: Path) -> None:
    """Saving casts for the file only: the model's weights, dtype and config stay as they were,
    the file has the input's dtype and tied weights, and an unchanged model saves to the input's
    bytes."""
    import torch
    from transformers import AutoModelForCausalLM

    from surgeon.repair.save import save_like
    from surgeon.safetensors_io import tensor_index
    from surgeon.testing import tiny_model, tiny_tokenizer

    for arch in ("gpt2", "llama"):  # gpt2 ties its output embedding to the input one
        src = tmp_path / f"in-{arch}"
        tiny_model(arch).to(torch.bfloat16).save_pretrained(src)
        tiny_tokenizer().save_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        config = model.config.to_dict()
        out = tmp_path / f"out-{arch}"
        save_like(model, tiny_tokenizer(), out, src, src)
        after = model.state_dict()
        assert all(v.dtype == torch.float32 for v in after.values())
        for name, value in state.items():
            torch.testing.assert_close(after[name], value, rtol=0, atol=0)
        assert model.config.to_dict() == config
        assert {k: v.dtype for k, v in tensor_index(out).items()} == {
            k: v.dtype for k, v in tensor_index(src).items()
        }
        assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
        assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


# ---------------------------------------------------------------------------------------------
# provenance


def write_safetensors(path: Path, header: dict, payload: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)


def tiny_model_dir(root: Path) -> Path:
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    write_safetensors(model / "model.safetensors", header, struct.pack("<2f", 1.0, 2.0))
    return model


def test_prompt_file_hash_changes_with_content(tmp_path: Path) -> None:
    prompts = tmp_path / "harmful.jsonl"
    prompts.write_text('{"prompt": "a"}\n')
    first = provenance({"harmful": prompts}, {"seed": 0}, {})["inputs"]["harmful"]
    assert first["kind"] == "file" and first["size"] == 16
    assert first["sha256"] == hashlib.sha256(b'{"prompt": "a"}\n').hexdigest()
    prompts.write_text('{"prompt": "b"}\n')  # same size, one byte different
    second = provenance({"harmful": prompts}, {"seed": 0}, {})["inputs"]["harmful"]
    assert second["size"] == first["size"]
    assert second["sha256"] != first["sha256"]
    assert second["sha256"] == hashlib.sha256(b'{"prompt": "b"}\n').hexdigest()


def test_directory_fingerprint_reads_headers_not_weights(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path)
    digest, n = directory_sha256(model)
    assert n == 2
    # different tensor values with the same header: same fingerprint (weights are not read)
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    write_safetensors(model / "model.safetensors", header, struct.pack("<2f", 5.0, 6.0))
    assert directory_sha256(model)[0] == digest
    # a config change, a header change, or a new file changes it
    (model / "config.json").write_text('{"model_type": "llama", "hidden_size": 16}')
    after_config = directory_sha256(model)[0]
    assert after_config != digest
    header["w"]["shape"] = [1, 2]
    write_safetensors(model / "model.safetensors", header, struct.pack("<2f", 5.0, 6.0))
    after_header = directory_sha256(model)[0]
    assert after_header != after_config
    (model / "tokenizer.json").write_text("{}")
    assert directory_sha256(model) == (directory_sha256(model)[0], 3)
    assert directory_sha256(model)[0] != after_header
    (model / ".cache").mkdir()
    (model / ".cache" / "junk").write_text("ignored")
    assert directory_sha256(model)[1] == 3


def test_provenance_record(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path)
    record = provenance(
        {"model": model, "base": None, "hub": "org/not-local"},
        {"seed": 7},
        {"device": "cpu"},
    )
    assert list(record) == [
        "provenance_version",
        "timestamp",
        "command",
        "versions",
        "seeds",
        "inputs",
        "extra",
    ]
    assert record["seeds"] == {"seed": 7} and record["extra"] == {"device": "cpu"}
    assert record["versions"]["surgeon"] and "torch" in record["versions"]
    assert record["timestamp"].endswith("+00:00")
    assert isinstance(record["command"], list)
    assert record["inputs"]["model"]["kind"] == "directory"
    assert record["inputs"]["model"]["files"] == 2
    assert record["inputs"]["base"] == {"path": None, "kind": "reference", "sha256": None}
    assert record["inputs"]["hub"]["kind"] == "reference"
    path = write_provenance(record, tmp_path / "provenance.json")
    assert json.loads(path.read_text()) == record
    assert fingerprint(model) == record["inputs"]["model"]


# ---------------------------------------------------------------------------------------------
# config.toml


def test_config_toml_round_trip(tmp_path: Path) -> None:
    config = {
        "model": "/m/ft",
        "base": None,
        "batch_size": 16,
        "lr": 3e-4,
        "huge": 1e16,
        "whole": 2.0,
        "neg_inf": -math.inf,
        "trust_remote_code": False,
        "layers": [2, 3],
        "path": Path("/tmp/x y"),
        "odd": 'quote " back\\slash\nnew\ttab \x01 é',
        "weird key.with dot": 1,
        "diagnose": {"max_new_tokens": 48, "judge": "keyword", "skip": None},
        "rollback": {"steps": 20, "schedule": {"warmup": 5, "checkpoints": [5, 10, 15, 20]}},
        "runs": [{"seed": 0}, {"seed": 1, "tag": "b"}],
    }
    path = write_config_toml(config, tmp_path / "config.toml")
    back = tomllib.loads(path.read_text())
    expected = {k: v for k, v in config.items() if v is not None}
    expected["path"] = "/tmp/x y"
    expected["diagnose"] = {"max_new_tokens": 48, "judge": "keyword"}
    assert back == expected
    assert isinstance(back["whole"], float) and back["lr"] == 3e-4
    assert math.isnan(tomllib.loads(to_toml({"x": math.nan}))["x"])


def test_config_toml_rejects_unknown_types() -> None:
    with pytest.raises(TypeError, match=r"a\.b: cannot write object"):
        to_toml({"a": {"b": object()}})
