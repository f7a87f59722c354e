"""Prompt files (.txt, .jsonl, .csv) and the bundled prompt sets.

Formats (conventions.md): ``.txt`` one prompt per line; ``.jsonl`` objects with ``prompt`` and
optional ``category``, ``system``, ``reference``; ``.csv`` with a ``prompt`` column (and the same
optional columns). Every problem is an :class:`InputError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from surgeon.errors import InputError

BUNDLED = ("harmful", "harmless", "over_refusal", "conflicts")
"""Names of the prompt sets shipped in ``surgeon/data``."""


@dataclass(frozen=True)
class Prompt:
    """One prompt and its optional annotations."""

    prompt: str
    """The user message."""
    category: str | None = None
    """A label used to break rates down (harm category, task type)."""
    system: str | None = None
    """A system message to format the prompt with."""
    reference: str | None = None
    """An expected answer (task files) or a constraint spec (conflict files)."""


def _check_text(path: Path, raw: bytes) -> str:
    if b"\x00" in raw[:8192]:
        raise InputError(f"{path}: binary file, expected a text prompt file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _from_mapping(path: Path, where: str, row: dict) -> Prompt:
    value = row.get("prompt")
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path}:{where}: missing or empty 'prompt'")
    opt = {k: row.get(k) for k in ("category", "system", "reference")}
    for key, val in opt.items():
        if val is not None and not isinstance(val, str):
            raise InputError(f"{path}:{where}: '{key}' must be a string")
    return Prompt(value.strip(), **{k: (v or None) for k, v in opt.items()})


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read a prompt file; raise :class:`InputError` on a missing, empty or malformed file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such prompt file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a prompt file")
    text = _check_text(path, path.read_bytes())
    suffix = path.suffix.lower()
    prompts: list[Prompt] = []
    if suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n}: expected a JSON object with 'prompt'")
            prompts.append(_from_mapping(path, str(n), row))
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines(keepends=True))
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise InputError(f"{path}: CSV has no 'prompt' column")
        for n, row in enumerate(reader, 2):
            prompts.append(_from_mapping(path, str(n), row))
    elif suffix in (".txt", ""):
        prompts = [Prompt(line.strip()) for line in text.splitlines() if line.strip()]
    else:
        raise InputError(f"{path}: unknown prompt file type {suffix!r} (use .txt, .jsonl, .csv)")
    if not prompts:
        raise InputError(f"{path}: no prompts in file")
    return prompts


def bundled_path(name: str) -> Path:
    """Path of a bundled prompt set (``harmful``, ``harmless``, ``over_refusal``, ``conflicts``)."""
    if name not in BUNDLED:
        raise InputError(f"unknown bundled prompt set {name!r}; choose from {', '.join(BUNDLED)}")
    return Path(str(resources.files("surgeon.data").joinpath(f"{name}.jsonl")))


def load_bundled(name: str) -> list[Prompt]:
    """Load a bundled prompt set."""
    return load_prompts(bundled_path(name))


def prompts_or_bundled(path: str | Path | None, name: str) -> list[Prompt]:
    """A user file when given, else the bundled set of that name."""
    return load_prompts(path) if path is not None else load_bundled(name)
