"""Atomic output directories, provenance records and config.toml."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tomllib
from pathlib import Path

import pytest

from surgeon.errors import InputError
from surgeon.outdir import atomic_output_dir, check_output_target
from surgeon.provenance import (
    directory_sha256,
    fingerprint,
    provenance,
    to_toml,
    write_config_toml,
    write_provenance,
)
from surgeon.report import write_report_files


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
        written = write_report_files({"schema_version": 1, "model": "m"}, work)
        assert all(p.is_relative_to(work) for p in written)
    assert siblings(target) == ["out"]
    assert sorted(p.name for p in target.iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads((target / "report.json").read_text())["model"] == "m"


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
