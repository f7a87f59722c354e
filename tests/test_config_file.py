"""Config files: flags override the file, command tables override the top level, typos fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgeon.config_file import merge_settings, read_config
from surgeon.errors import InputError

KNOWN = ("batch_size", "seed", "dtype")


def test_file_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("batch_size = 4\nseed = 1\n[diagnose]\nseed = 7\n[repair]\nseed = 9\n")
    from_file = read_config(cfg, "diagnose", KNOWN)
    assert from_file == {"batch_size": 4, "seed": 7}
    merged = merge_settings(
        {"batch_size": 16, "seed": 0, "dtype": "auto"}, from_file, {"batch_size": 2, "seed": None}
    )
    assert merged == {"batch_size": 2, "seed": 7, "dtype": "auto"}


def test_unknown_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("batchsize = 4\n")
    with pytest.raises(InputError, match=r"c.toml: unknown key 'batchsize'"):
        read_config(cfg, "diagnose", KNOWN)


def test_invalid_toml_and_missing(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("batch_size = = 4\n")
    with pytest.raises(InputError, match="invalid TOML"):
        read_config(cfg, "diagnose", KNOWN)
    with pytest.raises(InputError, match="no such config file"):
        read_config(tmp_path / "nope.toml", "diagnose", KNOWN)


def test_repair_file_reaches_the_rollback_config(tmp_path: Path) -> None:
    """Every repair key of a config file lands in the RollbackConfig, and a bad value is an
    input error naming it."""
    from surgeon.runs import REPAIR_DEFAULTS, rollback_config

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[repair]\nrecovery_rate = 0.0005\nsteps = 80\ntask_hold = 'always'\n"
        "first_token_share = 0.8\nover_refusal_check = 'first-token'\nguard_weight = 2.0\n"
        "bounded_heap = false\n"
    )
    from_file = read_config(cfg, "repair", tuple(REPAIR_DEFAULTS))
    config = rollback_config(merge_settings(REPAIR_DEFAULTS, from_file, {}))
    assert (config.recovery_rate, config.steps, config.task_hold) == (0.0005, 80, "always")
    assert (config.first_token_share, config.over_refusal_check) == (0.8, "first-token")
    assert (config.guard_weight, config.bounded_heap) == (2.0, False)
    defaults = rollback_config(REPAIR_DEFAULTS)
    assert (defaults.first_token_share, defaults.over_refusal_check) == (0.5, "generation")
    bad = merge_settings(REPAIR_DEFAULTS, {"task_hold": "sometimes"}, {})
    with pytest.raises(InputError, match="task_hold"):
        rollback_config(bad)


def test_repair_defaults_match_the_rollback_config() -> None:
    """The CLI's repair defaults are the library's: no key drifts from RollbackConfig."""
    from dataclasses import fields

    from surgeon.repair import RollbackConfig
    from surgeon.runs import REPAIR_DEFAULTS

    library = RollbackConfig()
    shared = [f.name for f in fields(RollbackConfig) if f.name in REPAIR_DEFAULTS]
    assert len(shared) >= 20
    assert {n: REPAIR_DEFAULTS[n] for n in shared} == {n: getattr(library, n) for n in shared}
