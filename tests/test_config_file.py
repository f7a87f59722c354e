"""Settings from one place: every option of the typed configs is a TOML key (flags for the
marked ones), checked against its type; flags override the file, command tables the top."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import app
from surgeon.errors import InputError
from surgeon.options import Option, base_type, flat_values, options_of
from surgeon.provenance import to_toml
from surgeon.settings import (
    command_options,
    diagnose_config_class,
    effective_settings,
    repair_config_classes,
    resolve,
)

ROOTS = {"diagnose": diagnose_config_class(), **repair_config_classes()}


def _command(root: str) -> str:
    return "diagnose" if root == "diagnose" else "repair"


def _write(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    return cfg


def test_file_then_flags(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "batch_size = 4\nseed = 1\n[diagnose]\nseed = 7\n[repair]\nseed = 9\n")
    config = resolve("diagnose", cfg, {"batch_size": 2, "seed": None})
    assert (config.batch_size, config.seed) == (2, 7)
    run = resolve("repair", cfg, {})
    assert (run.rollback.batch_size, run.rollback.seed) == (4, 9)


def test_unknown_key(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "batchsize = 4\n")
    with pytest.raises(InputError, match=r"c.toml: unknown key 'batchsize' for 'diagnose'"):
        resolve("diagnose", cfg, {})


def test_invalid_toml_and_missing(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "batch_size = = 4\n")
    with pytest.raises(InputError, match="invalid TOML"):
        resolve("diagnose", cfg, {})
    with pytest.raises(InputError, match="no such config file"):
        resolve("diagnose", tmp_path / "nope.toml", {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('batch_size = "x"', r"c.toml: batch_size: expected an integer, got 'x'"),
        ("fail_on = 3", r"c.toml: fail_on: expected a table of harmful_increase"),
        ('fail_on = {harmful_increase = "a"}', r"c.toml: fail_on: harmful_increase: expected a"),
        ("fail_on = {harmful_rise = 0.1}", r"c.toml: fail_on: unknown key 'harmful_rise'"),
        ("seed = 1.5", r"c.toml: seed: expected an integer, got 1.5"),
        ("seed = true", r"c.toml: seed: expected an integer, got True"),
        ("max_prompts = 0", r"c.toml: max_prompts must be >= 1"),
        ("compare_weights = 1", r"c.toml: compare_weights: expected true or false, got 1"),
        ('harmful = ""', r"c.toml: harmful: expected a file path"),
        ("diagnose = 3", r"c.toml: \[diagnose\] must be a table"),
    ],
)
def test_wrong_types_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        resolve("diagnose", _write(tmp_path, text + "\n"), {})


def test_repair_choices_are_checked(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "[repair]\ntask_hold = 'sometimes'\n")
    with pytest.raises(InputError, match=r"c.toml: task_hold: must be one of on-restart"):
        resolve("repair", cfg, {})
    with pytest.raises(InputError, match="--method must be one of rollback, sail; got 'graft'"):
        resolve("repair", None, {}, method="graft")


def _other_value(option: Option, tmp_path: Path) -> Any:
    """A valid value of ``option`` that differs from its default."""
    special = {
        "judge": str(tmp_path),
        "cras_judge": str(tmp_path),
        "focal_layers": "3,4",
        "device": "auto",
        "device_map": "auto",
        "dtype": "bfloat16",
        "layer": 3,
        "gguf_file": "model.Q4_1.gguf",
    }
    if option.key in special:
        return special[option.key]
    if option.choices:
        return next(c for c in option.choices if c != option.default)
    if option.table_of is not None:
        first = options_of(option.table_of)[0]
        return {first.key: first.default / 2}
    kind = base_type(option.annotation)
    if kind is bool:
        return not option.default
    if kind is Path:
        return str(tmp_path / f"{option.key}.jsonl")
    if kind is int:
        return (option.default or 1) + 1
    if kind is float:
        return (option.default if option.default is not None else 0.5) / 2 or 0.25
    raise AssertionError(f"no test value for {option.key}: {option.annotation}")


@pytest.mark.parametrize("root", list(ROOTS))
def test_every_option_is_settable_from_toml(root: str, tmp_path: Path) -> None:
    """Each field of the root config and of every config nested in it is a TOML key that
    reaches the config: none is settable nowhere."""
    cls = ROOTS[root]
    options = options_of(cls)
    values = {o.key: _other_value(o, tmp_path) for o in options}
    command = _command(root)
    cfg = _write(tmp_path, f"[{command}]\n" + to_toml(values))
    config = resolve(command, cfg, {}, method=None if root == "diagnose" else root)
    got = flat_values(config)
    for option in options:
        want = values[option.key]
        if option.table_of is not None:
            assert all(got[option.key][k] == v for k, v in want.items()), option.key
        elif base_type(option.annotation) is Path:
            assert got[option.key] == Path(want), option.key
        else:
            assert got[option.key] == want, option.key

    def leaves(c: type) -> int:  # dataclass fields, nested configs counted by their own fields
        hints = typing.get_type_hints(c)
        return sum(
            leaves(hints[f.name]) if f.metadata.get("surgeon.nested") else 1
            for f in dataclasses.fields(c)
        )

    assert len(options) == leaves(cls)


@pytest.mark.parametrize("root", list(ROOTS))
def test_effective_settings_round_trip(root: str, tmp_path: Path) -> None:
    command = _command(root)
    config = resolve(command, None, {}, method=None if root == "diagnose" else root)
    cfg = _write(tmp_path, to_toml(effective_settings(config)))
    again = resolve(command, cfg, {})
    assert again == config


@pytest.mark.parametrize("command", ["diagnose", "repair"])
def test_help_shows_each_flag_and_its_default_once(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # wrapped cells joined
    flags = [o for o in command_options(command) if o.is_flag]
    assert len(flags) >= 12
    for option in flags:
        assert option.flag_name in text, option.key
        default = option.default
        if default is not None and option.table_of is None and not isinstance(default, bool):
            assert text.count(f"(default: {default})") >= 1, option.key
    once = {"diagnose": "(default: 128)", "repair": "(default: 0.02)"}[command]
    assert text.count(once) == 1  # max_prompts / target_margin: shown exactly once


def test_flags_reach_the_config(tmp_path: Path) -> None:
    """Flags go through the CLI's derived options into the typed config."""
    from surgeon.testing import save_tiny

    model = save_tiny(tmp_path / "m")
    cfg = _write(tmp_path, "[repair]\nselection = 'task-aware'\n")
    args = ["repair", str(model), "--base", str(model), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(
        app, [*args, "--config", str(cfg), "--selection", "bogus"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2 and "bogus" in result.output
    result = CliRunner().invoke(app, ["diagnose", str(model), "--fail-on", "harmful_rise=1"])
    assert result.exit_code == 2
    assert "--fail-on: unknown name 'harmful_rise'" in result.output
    result = CliRunner().invoke(app, ["diagnose", str(model), "--fail-on", "harmful_rate=x"])
    assert result.exit_code == 2 and "'x' is not a number" in result.output
