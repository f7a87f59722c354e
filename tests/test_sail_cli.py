"""``surgeon repair --method sail`` through the command line on tiny models: the outputs, the
report, the effective config, and a bad preference file (exit 2, the line named)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from surgeon.testing import save_tiny
from tests.test_sail import _pairs

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sail-cli-models")
    return save_tiny(root / "model", "llama", seed=1), save_tiny(root / "base", "llama", seed=0)


def test_cli_sail_repair_writes_adapter_and_report(
    tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    model, base = tiny_pair
    prefs = tmp_path / "prefs.jsonl"
    rows = [{"system": p.system, "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            for p in _pairs()]  # fmt: skip
    prefs.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    config = tmp_path / "surgeon.toml"
    config.write_text(
        "[repair]\nn_eval = 6\nmax_new_tokens = 6\ncheck_every = 0\nn_train = 12\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["repair", str(model), "--base", str(base), "--method", "sail", "--out", str(out),
         "--preferences", str(prefs), "--focal-layers", "2", "--steps", "3", "--batch-size", "2",
         "--weighting", "uniform", "--config", str(config), "--json"],
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["method"] == "sail" and report["weighting"] == "uniform"
    assert report["pairs"]["source"] == "file" and report["n_pairs"] == 3
    assert report["focal_layers"] == [2] and len(report["steps"]) == 3
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not (out / "merged").exists()
    assert result.exit_code == (1 if report["verdict"] == "fail" else 0)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "Conflict violation rate" in md and "CRAS (mean, 1-5)" in md
    assert f"{report['steps'][0]['loss']:.3f}" in md  # the steps table shows the losses
    toml = (out / "config.toml").read_text(encoding="utf-8")
    assert 'method = "sail"' in toml and "steps = 3" in toml


def test_cli_bad_preference_file_exits_2(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    model, base = tiny_pair
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p"}\n')
    result = runner.invoke(
        app,
        ["repair", str(model), "--base", str(base), "--method", "sail", "--out",
         str(tmp_path / "out"), "--preferences", str(prefs)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "prefs.jsonl:2" in result.output and "'chosen'" in result.output
    assert not (tmp_path / "out").exists()
