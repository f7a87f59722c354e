"""What reproduces a run: versions, seeds, command line, input hashes; and config.toml.

Model directories are fingerprinted without reading their weights: small files (configs,
tokenizer files) are hashed in full, safetensors files by their JSON header and size, other
large files by their size and first and last MiB. Prompt files and other single files are
hashed in full.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from surgeon.env import versions

SMALL_FILE = 16 * 1024 * 1024
"""Files in a model directory up to this size are hashed in full."""
EDGE = 1024 * 1024
"""Bytes read from each end of a large non-safetensors file."""
MAX_HEADER = 100_000_000
"""Largest safetensors header surgeon will read (the format's own limit)."""
PROVENANCE_VERSION = 1


def provenance(
    inputs: Mapping[str, Path | str | None],
    seeds: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record of a run, ready for ``provenance.json``.

    ``inputs`` names each input (``{"model": path, "harmful": prompt_file}``); a value that
    is not an existing local path (a hub id, ``None``) is recorded without a hash.
    """
    return {
        "provenance_version": PROVENANCE_VERSION,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": list(sys.argv),
        "versions": versions(),
        "seeds": dict(seeds),
        "inputs": {name: fingerprint(path) for name, path in inputs.items()},
        "extra": dict(extra or {}),
    }


def write_provenance(record: Mapping[str, Any], path: Path) -> Path:
    """Write a :func:`provenance` record as JSON (indent 2) to ``path`` and return ``path``."""
    path = Path(path)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def fingerprint(path: Path | str | None) -> dict[str, Any]:
    """``{"path", "kind", "sha256", ...}`` for one input: ``kind`` is ``"file"``,
    ``"directory"`` or ``"reference"`` (not a local path: hub id or ``None``, no hash)."""
    if path is None:
        return {"path": None, "kind": "reference", "sha256": None}
    p = Path(path).expanduser()
    if p.is_file():
        return {
            "path": str(p.resolve()),
            "kind": "file",
            "size": p.stat().st_size,
            "sha256": file_sha256(p),
        }
    if p.is_dir():
        digest, n = directory_sha256(p)
        return {"path": str(p.resolve()), "kind": "directory", "files": n, "sha256": digest}
    return {"path": str(path), "kind": "reference", "sha256": None}


def file_sha256(path: Path) -> str:
    """The sha256 of a whole file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(EDGE), b""):
            h.update(chunk)
    return h.hexdigest()


def directory_sha256(directory: Path) -> tuple[str, int]:
    """A fingerprint of a model directory and the number of files it covers.

    Every regular file below ``directory`` (hidden ones skipped), in sorted order,
    contributes its relative path, its size and: for ``*.safetensors`` the JSON header; for
    other files up to :data:`SMALL_FILE` the whole content; for larger ones the first and
    last :data:`EDGE` bytes. Tensor data is never read.
    """
    h = hashlib.sha256()
    files = sorted(
        p
        for p in Path(directory).rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    for p in files:
        rel = p.relative_to(directory).as_posix()
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        h.update(_content_digest(p, size))
    return h.hexdigest(), len(files)


def _content_digest(path: Path, size: int) -> bytes:
    if path.suffix == ".safetensors":
        return hashlib.sha256(b"safetensors-header\0" + _safetensors_header(path)).digest()
    if size <= SMALL_FILE:
        return bytes.fromhex(file_sha256(path))
    h = hashlib.sha256(b"edges\0")
    with path.open("rb") as f:
        h.update(f.read(EDGE))
        f.seek(size - EDGE)
        h.update(f.read(EDGE))
    return h.digest()


def _safetensors_header(path: Path) -> bytes:
    """The raw header bytes of a safetensors file (its first 8 bytes if the length is bad)."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return raw
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            return raw
        return raw + f.read(n)


# ---------------------------------------------------------------------------------------------
# config.toml


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def to_toml(config: Mapping[str, Any]) -> str:
    """``config`` as TOML: nested dicts become tables, lists of dicts arrays of tables.

    Supports str, int, float (``nan``/``inf`` included), bool, paths (as strings), lists of
    those, and dicts; keys whose value is ``None`` are omitted (TOML has no null). Raises
    :class:`TypeError` for anything else. ``tomllib.loads`` reads the result back.
    """
    lines: list[str] = []
    _table(config, (), lines)
    return "\n".join(lines).strip() + "\n"


def write_config_toml(config: Mapping[str, Any], path: Path) -> Path:
    """Write the effective config as TOML to ``path`` and return ``path``."""
    path = Path(path)
    path.write_text(to_toml(config), encoding="utf-8")
    return path


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(map(_is_table, value))


def _table(table: Mapping[str, Any], prefix: tuple[str, ...], lines: list[str]) -> None:
    for key, value in table.items():
        if value is None or _is_table(value) or _is_table_array(value):
            continue
        lines.append(f"{_key(key)} = {_value(value, (*prefix, str(key)))}")
    for key, value in table.items():
        name = (*prefix, str(key))
        if _is_table(value):
            lines += ["", f"[{'.'.join(map(_key, name))}]"]
            _table(value, name, lines)
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{'.'.join(map(_key, name))}]]"]
                _table(item, name, lines)


def _key(key: Any) -> str:
    key = str(key)
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: Any, where: tuple[str, ...]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, (str, Path)):
        return _string(str(value))
    if isinstance(value, (list, tuple)):
        items = [_value(v, where) for v in value if v is not None]
        return "[" + ", ".join(items) + "]"
    if _is_table(value):
        inner = ", ".join(
            f"{_key(k)} = {_value(v, (*where, str(k)))}" for k, v in value.items() if v is not None
        )
        return "{" + (f" {inner} " if inner else "") + "}"
    raise TypeError(f"{'.'.join(where)}: cannot write {type(value).__name__} as TOML")


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
