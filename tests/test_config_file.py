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
