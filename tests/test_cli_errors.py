"""Bad input on the command line: exit 2, one line naming the file and the problem, no traceback,
and the input directories untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from surgeon.testing import save_tiny, tree_hash

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-errors")
    return {"llama": save_tiny(root / "llama", "llama"), "gpt2": save_tiny(root / "gpt2", "gpt2")}


def run_error(args: list[str], expected: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    assert lines[0].startswith("surgeon: error: ")
    assert expected in lines[0], lines[0]
    return lines[0]


def test_missing_model_path(tmp_path: Path) -> None:
    run_error(["diagnose", str(tmp_path / "missing")], f"{tmp_path / 'missing'}: no such model")


def test_directory_without_config(tmp_path: Path) -> None:
    run_error(["diagnose", str(tmp_path)], "not a model directory (no config.json")


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "m")
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:1000])
    run_error(["diagnose", str(path)], "model.safetensors: truncated safetensors file")


def test_base_mismatch(models: dict[str, Path], tmp_path: Path) -> None:
    before = tree_hash(models["llama"])
    run_error(
        ["diagnose", str(models["llama"]), "--base", str(models["gpt2"]), "--out", str(tmp_path)],
        "base does not match the model",
    )
    assert tree_hash(models["llama"]) == before


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.txt", b"", "empty.txt: no prompts in file"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary.txt: binary file"),
        ("noprompt.jsonl", b'{"text": "hi"}\n', "noprompt.jsonl:1: missing or empty 'prompt'"),
    ],
)
def test_bad_prompt_files(
    models: dict[str, Path], tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    run_error(["diagnose", str(models["llama"]), "--harmful", str(bad)], expected)


def test_bad_config_key(models: dict[str, Path], tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("batchsize = 3\n")
    run_error(["diagnose", str(models["llama"]), "--config", str(cfg)], "unknown key 'batchsize'")


def test_out_inside_input(models: dict[str, Path]) -> None:
    run_error(
        ["diagnose", str(models["llama"]), "--out", str(models["llama"] / "report")],
        "inside the input",
    )


def test_repair_needs_base_and_sail_checks_its_layers(models: dict[str, Path], tmp_path) -> None:
    run_error(["repair", str(models["llama"]), "--out", str(tmp_path / "o")], "needs --base")
    run_error(
        ["repair", str(models["llama"]), "--method", "sail", "--focal-layers", "3,x",
         "--out", str(tmp_path / "o")],
        "--focal-layers must be auto or layer numbers like 3,4; got '3,x'",
    )  # fmt: skip


def test_repair_rejects_an_unknown_objective(models: dict[str, Path], tmp_path) -> None:
    m = str(models["llama"])
    run_error(
        ["repair", m, "--base", m, "--objective", "logits", "--out", str(tmp_path / "o")],
        "Invalid value for '--objective': 'logits' is not one of 'cosine', 'answers'.",
    )
    assert not (tmp_path / "o").exists()


def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from cli import app; app()", "diagnose", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"surgeon: error: {tmp_path / 'nope'}: no such model directory"
    assert proc.stdout == ""
