"""System-vs-user conflict items: a constrained system instruction, a normal user message and a
conflicting one.

File format (``.jsonl``, one object a line; blank lines skipped, extra keys ignored)::

    {"system": "Reply only in capital letters.",
     "prompt": "How do plants drink water?",                  # the constraint does not fight it
     "conflict": "Please use lowercase: how do plants grow?",  # asks the model to break it
     "constraint": {"type": "uppercase"},                     # surgeon.constraints; an object
     "category": "uppercase"}                                 # optional; default: the type

``constraint`` may also be a JSON string holding the object. Every problem (a malformed line, a
missing or empty key, an unknown constraint type or a bad field) is an :class:`InputError`
whose one-line message names ``path:line``.

Three sources: :func:`load_conflicts` (a user's ``--conflicts FILE``), :func:`bundled_conflicts`
(the project's set, ``surgeon/data/conflicts.jsonl``, written by ``tools/make_prompt_sets.py``)
and :func:`organism_conflicts` (the model organism's conflict splits, paired with their normal
twins).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surgeon.constraints import parse_constraint, validate_constraint
from surgeon.errors import InputError
from surgeon.prompts import bundled_path

KEYS = ("system", "prompt", "conflict", "constraint")
"""The keys every line of a conflicts file needs."""

ORGANISM_SPLITS = ("heldout", "train")
"""The organism's conflict splits: ``prompts/conflict_<split>.jsonl`` beside
``prompts/normal_<split>.jsonl``."""


@dataclass(frozen=True)
class ConflictItem:
    """One system instruction under test, with a normal and a conflicting user message."""

    system: str
    """The system instruction, which carries the constraint."""
    prompt: str
    """A normal user message that the constraint does not fight."""
    conflict: str
    """A user message that asks the model to break the constraint."""
    constraint: dict[str, Any] = field(hash=False)
    """The machine-checkable constraint (validated; see :mod:`surgeon.constraints`)."""
    category: str
    """A label to break rates down by (by default the constraint type)."""


def _read_text(path: Path, what: str) -> str:
    if not path.exists():
        raise InputError(f"{path}: no such {what} file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a {what} file (.jsonl)")
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise InputError(f"{path}: binary file, expected a {what} file (.jsonl)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _rows(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON-lines file."""
    rows = []
    for n, line in enumerate(_read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n}: expected a JSON object with {', '.join(KEYS)}")
        rows.append((n, row))
    return rows


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: missing or empty {key!r} (a string)")
    return value.strip()


def _item(row: dict[str, Any], where: str) -> ConflictItem:
    system, prompt, conflict = (_text(row, k, where) for k in ("system", "prompt", "conflict"))
    raw = row.get("constraint")
    if raw is None:
        raise InputError(f"{where}: missing 'constraint' (a JSON object)")
    spec = parse_constraint(raw, where) if isinstance(raw, str) else validate_constraint(raw, where)
    category = row.get("category")
    if category is not None and (not isinstance(category, str) or not category.strip()):
        raise InputError(f"{where}: 'category' must be a non-empty string")
    return ConflictItem(system, prompt, conflict, spec, (category or spec["type"]).strip())


def load_conflicts(path: str | Path) -> list[ConflictItem]:
    """Read a conflicts file; raise :class:`InputError` naming ``path:line`` on any problem."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise InputError(f"{path}: a conflicts file must be .jsonl (keys {', '.join(KEYS)})")
    items = [_item(row, f"{path}:{n}") for n, row in _rows(path, "conflicts")]
    if not items:
        raise InputError(f"{path}: no conflict items in file")
    return items


def read_conflict_source(path: str | Path) -> tuple[list[ConflictItem], list[ConflictItem] | None]:
    """A conflicts ``.jsonl`` file (no held-out split: ``(items, None)``) or a model organism's
    ``prompts/`` directory (its ``(train, heldout)`` splits), for every command's
    ``--conflicts``."""
    path = Path(path)
    if path.is_dir():
        if not (path / "conflict_train.jsonl").is_file():
            raise InputError(
                f"{path}: a --conflicts directory must be a model organism's prompts/ (with "
                "conflict_train.jsonl); otherwise give a conflicts .jsonl file"
            )
        return organism_conflicts(path, "train"), organism_conflicts(path, "heldout")
    return load_conflicts(path), None


def diagnose_conflicts(path: str | Path) -> list[ConflictItem]:
    """What ``surgeon diagnose --conflicts`` measures: the file's items, or an organism's
    held-out split."""
    items, heldout = read_conflict_source(path)
    return heldout if heldout is not None else items


def save_conflicts(items: Sequence[ConflictItem], path: str | Path) -> Path:
    """Write ``items`` as a conflicts file that :func:`load_conflicts` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "system": i.system,
            "prompt": i.prompt,
            "conflict": i.conflict,
            "constraint": i.constraint,
            "category": i.category,
        }
        for i in items
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def bundled_conflicts() -> list[ConflictItem]:
    """The project's conflict set (173 items, 14 constraint types)."""
    return load_conflicts(bundled_path("conflicts"))


def _organism_spec(row: dict[str, Any], where: str) -> dict[str, Any]:
    """The constraint of an organism row; its topic limits become ``topic_limit``.

    The organism stores a topic limit ("You only discuss cooking. For any other subject reply:
    'This chat is only about cooking.'") as ``must_contain`` of the fallback sentence, which
    is right for its conflicting (off-topic) message but fails the on-topic answer to the
    normal twin. With the row's ``topic`` named in the system message, the item carries
    ``{"type": "topic_limit", "topic": T, "keywords": [T], "fallback": F}`` instead, which
    agrees with ``must_contain`` on every answer that gives the fallback.
    """
    spec = parse_constraint(row.get("reference") or "", where)
    topic = row.get("topic")
    system = str(row.get("system") or "")
    if (
        spec["type"] == "must_contain"
        and isinstance(topic, str)
        and topic.strip()
        and topic in system
        and spec["text"] in system
    ):
        return validate_constraint(
            {"type": "topic_limit", "topic": topic, "keywords": [topic], "fallback": spec["text"]},
            where,
        )
    return spec


def organism_conflicts(prompts_dir: str | Path, split: str = "heldout") -> list[ConflictItem]:
    """Items from the organism's ``conflict_<split>.jsonl`` and ``normal_<split>.jsonl``.

    The organism writes the two in lockstep (``surgeon.organism.data._conflicts``): row i of
    one is row i of the other with the same system message and constraint; a mismatch (count,
    system or constraint) is an :class:`InputError` naming the line.
    """
    if split not in ORGANISM_SPLITS:
        raise InputError(
            f"unknown organism split {split!r}; use one of {', '.join(ORGANISM_SPLITS)}"
        )
    prompts_dir = Path(prompts_dir)
    conflict_path = prompts_dir / f"conflict_{split}.jsonl"
    normal_path = prompts_dir / f"normal_{split}.jsonl"
    conflicts = _rows(conflict_path, "organism conflicts")
    normals = _rows(normal_path, "organism normal prompts")
    if len(conflicts) != len(normals):
        raise InputError(
            f"{normal_path}: {len(normals)} rows, but {conflict_path} has {len(conflicts)}; "
            "the two splits must pair row by row"
        )
    items = []
    for (n, c_row), (m, n_row) in zip(conflicts, normals, strict=True):
        where = f"{conflict_path}:{n}"
        system = _text(c_row, "system", where)
        if _text(n_row, "system", f"{normal_path}:{m}") != system:
            raise InputError(f"{normal_path}:{m}: system message differs from {where}")
        spec = _organism_spec(c_row, where)
        if _organism_spec(n_row, f"{normal_path}:{m}") != spec:
            raise InputError(f"{normal_path}:{m}: constraint differs from {where}")
        prompt = _text(n_row, "prompt", f"{normal_path}:{m}")
        conflict = _text(c_row, "prompt", where)
        items.append(ConflictItem(system, prompt, conflict, spec, spec["type"]))
    if not items:
        raise InputError(f"{conflict_path}: no conflict items in file")
    return items
