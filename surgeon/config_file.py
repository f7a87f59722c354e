"""TOML config files: every CLI flag also lives in a file (``--config``); flags override it.

A file holds flag names with underscores (``batch_size = 8``) at the top level, or in a table
named after the command (``[diagnose]``, ``[repair]``) whose keys win over the top level.
Unknown keys are an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from surgeon.errors import InputError

COMMAND_TABLES = ("diagnose", "repair", "demo")


def read_config(path: Path | None, command: str, known: Iterable[str]) -> dict[str, Any]:
    """The settings a config file gives ``command``; raise InputError on unknown keys."""
    if path is None:
        return {}
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: invalid TOML ({exc})") from None
    known_set = set(known)
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key in COMMAND_TABLES and isinstance(value, dict):
            continue
        settings[key] = value
    table = data.get(command)
    if isinstance(table, dict):
        settings.update(table)
    unknown = sorted(set(settings) - known_set)
    if unknown:
        raise InputError(
            f"{path}: unknown key {unknown[0]!r} for '{command}' "
            f"(known: {', '.join(sorted(known_set))})"
        )
    return settings


def merge_settings(
    defaults: Mapping[str, Any], from_file: Mapping[str, Any], flags: Mapping[str, Any]
) -> dict[str, Any]:
    """Defaults, then the file, then the flags the user actually gave (those not None)."""
    merged = dict(defaults)
    merged.update(from_file)
    merged.update({k: v for k, v in flags.items() if v is not None})
    return merged
