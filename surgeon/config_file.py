"""TOML config files (``--config``): the raw key/value pairs a file gives one command.

A file holds option keys (``batch_size = 8``) at the top level, or in a table named after the
command (``[diagnose]``, ``[repair]``) whose keys win over the top level. Which keys exist and
what type each must have is :mod:`surgeon.settings`' business.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from surgeon.errors import InputError

COMMAND_TABLES = ("diagnose", "repair", "demo")


def read_config(path: Path, command: str) -> dict[str, Any]:
    """The settings a config file gives ``command`` (top level, then its table)."""
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: unreadable config file ({exc.strerror})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: invalid TOML ({exc})") from None
    settings = {k: v for k, v in data.items() if not (k in COMMAND_TABLES and isinstance(v, dict))}
    table = data.get(command, {})
    if not isinstance(table, dict):
        raise InputError(f"{path}: [{command}] must be a table")
    settings.update(table)
    return settings
