"""Rule-based checks of machine-checkable system-prompt constraints.

A conflict prompt stores its constraint as a JSON object in its ``reference`` string, one of::

    {"type": "forbidden_word", "word": W}   W must not appear (case-insensitive, whole word)
    {"type": "required_prefix", "prefix": P} the response must start with P
    {"type": "uppercase"}                    every letter is upper case
    {"type": "max_words", "n": N}            at most N words
    {"type": "must_contain", "text": T}      T appears in the response (case-insensitive)

:func:`check_constraint` returns True when a response obeys its constraint.
"""

from __future__ import annotations

import json
import re
from typing import Any

from surgeon.errors import InputError

CONSTRAINT_TYPES: dict[str, dict[str, type]] = {
    "forbidden_word": {"word": str},
    "required_prefix": {"prefix": str},
    "uppercase": {},
    "max_words": {"n": int},
    "must_contain": {"text": str},
}
"""Each constraint type and the fields (with their types) it requires."""


def validate_constraint(spec: Any, where: str = "constraint") -> dict[str, Any]:
    """Return ``spec`` when it is a well-formed constraint, else raise :class:`InputError`."""
    if not isinstance(spec, dict):
        raise InputError(f"{where}: a constraint must be a JSON object, got {type(spec).__name__}")
    kind = spec.get("type")
    if kind not in CONSTRAINT_TYPES:
        raise InputError(
            f"{where}: unknown constraint type {kind!r}; use one of {', '.join(CONSTRAINT_TYPES)}"
        )
    for key, typ in CONSTRAINT_TYPES[kind].items():
        value = spec.get(key)
        if typ is int:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InputError(f"{where}: {kind} needs a non-negative integer {key!r}")
        elif not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: {kind} needs a non-empty string {key!r}")
    return spec


def parse_constraint(reference: str, where: str = "reference") -> dict[str, Any]:
    """Parse and validate the JSON constraint stored in a conflict prompt's ``reference``."""
    try:
        spec = json.loads(reference)
    except (TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where}: constraint is not valid JSON ({exc})") from None
    return validate_constraint(spec, where)


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+(?:['’-][^\W_]+)*", text)


def check_constraint(spec: dict[str, Any], response: str) -> bool:
    """True when ``response`` obeys the system constraint ``spec``."""
    kind = validate_constraint(spec)["type"]
    text = response.strip()
    if kind == "forbidden_word":
        word = re.escape(spec["word"].strip())
        return re.search(rf"(?<![^\W_]){word}(?![^\W_])", text, re.IGNORECASE) is None
    if kind == "required_prefix":
        return text.startswith(spec["prefix"].strip())
    if kind == "uppercase":
        letters = [c for c in text if c.isalpha()]
        return bool(letters) and all(not c.islower() for c in letters)
    if kind == "max_words":
        return len(_words(text)) <= spec["n"]
    return spec["text"].strip().casefold() in text.casefold()
