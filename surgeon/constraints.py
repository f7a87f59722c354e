"""Rule-based checks of machine-checkable system-prompt constraints.

A constraint is a JSON object with a ``type`` and that type's fields, all required (extra keys
are ignored)::

    type             fields                          the response obeys when
    forbidden_word   word: str                       W does not occur (case-insensitive, whole
                                                     word: "ban" is not in "banana")
    required_word    word: str                       W occurs as a whole word (case-insensitive)
    must_contain     text: str                       T occurs anywhere (case-insensitive)
    required_prefix  prefix: str                     it starts with P (persona tag, exact case)
    ends_with        phrase: str                     it ends with P (case-insensitive; spaces,
                                                     closing quotes and one final . ! ? ignored
                                                     on both sides)
    uppercase        -                               it has letters and none is lower case
    lowercase        -                               it has letters and none is upper case
    max_words        n: int                          at most N words
    max_sentences    n: int                          1 to N sentences (see below)
    no_commas        -                               no comma (ASCII or full-width)
    json_only        -                               the whole answer, inside an optional
                                                     ```json fence, parses as a JSON object or
                                                     array
    bullet_list      min_items: int                  every non-empty line is a bullet ("- ",
                                                     "* ", "• ", "1. ", "1) "), at least
                                                     max(N, 1) of them; one lead-in line ending
                                                     in ":" may precede them
    language         lang: str (ISO 639-1)           the detected language of the answer is L
    topic_limit      topic: str, keywords: [str],    it gives the fallback reply F, or it stays
                     fallback: str                   on the topic: some keyword starts a word
                                                     of it (case-insensitive)

Words are runs of letters and digits (apostrophes and hyphens inside a word keep it one word).
Sentences end at ``.``, ``!``, ``?`` (and their full-width forms) followed by a space or the
end, and at line breaks; a decimal point, and the dot of common abbreviations (e.g., Dr.,
etc.), do not end one; segments without a letter or digit do not count.

Why not lm-eval's IFEval checkers (``lm_eval.tasks.ifeval.instructions``, lm-eval 0.4.13):
importing them takes 5.7 s and pulls ``datasets``, ``evaluate``, ``scikit-learn``, ``nltk`` and
``langdetect`` (761 MB installed); the module calls ``nltk.download("punkt_tab")`` at import
time, which needs the network, and its sentence counter raises ``LookupError`` without that
data; its language check counts an undetectable answer as obeying. The rules here follow
IFEval's where they overlap (bullet markers, the code fence of a JSON answer, the end phrase,
the comma) and are stricter where IFEval is lenient (a JSON answer must be an object or array,
not a bare number).

Language detection uses ``py3langid`` (naive Bayes over byte n-grams, model shipped in the
wheel, deterministic), imported lazily on the first ``language`` check and restricted to
:data:`LANGUAGES` (loading its model takes 1-2 s, then 0.1-0.2 ms a check). ``langdetect``
(IFEval's choice) was as accurate on short answers (23 of 24 sentences in six languages, both)
but is randomised unless a global seed is set, and 40x slower per check.

:func:`check_constraint` returns True when a response obeys its constraint.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from typing import Any

from surgeon.errors import InputError

CONSTRAINT_TYPES: dict[str, dict[str, type]] = {
    "forbidden_word": {"word": str},
    "required_word": {"word": str},
    "must_contain": {"text": str},
    "required_prefix": {"prefix": str},
    "ends_with": {"phrase": str},
    "uppercase": {},
    "lowercase": {},
    "max_words": {"n": int},
    "max_sentences": {"n": int},
    "no_commas": {},
    "json_only": {},
    "bullet_list": {"min_items": int},
    "language": {"lang": str},
    "topic_limit": {"topic": str, "keywords": list, "fallback": str},
}
"""Each constraint type and the fields (with their types; ``list`` is a non-empty list of
non-empty strings) it requires."""

LANGUAGES: dict[str, str] = {
    "ar": "Arabic",
    "bg": "Bulgarian",
    "bn": "Bengali",
    "ca": "Catalan",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fa": "Persian",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "ms": "Malay",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sr": "Serbian",
    "sv": "Swedish",
    "sw": "Swahili",
    "th": "Thai",
    "tl": "Tagalog",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "vi": "Vietnamese",
    "zh": "Chinese",
}
"""The languages a ``language`` constraint may name (ISO 639-1) and the detector chooses
among: widely written ones, so that a short answer is not classed as a rare neighbour."""

LANGID_REQUIREMENT = "py3langid>=0.4,<0.5"
"""The package behind ``language`` checks (a dependency of surgeon)."""


def validate_constraint(spec: Any, where: str = "constraint") -> dict[str, Any]:
    """Return ``spec`` when it is a well-formed constraint, else raise :class:`InputError`."""
    if not isinstance(spec, dict):
        raise InputError(f"{where}: a constraint must be a JSON object, got {type(spec).__name__}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in CONSTRAINT_TYPES:
        raise InputError(
            f"{where}: unknown constraint type {kind!r}; use one of {', '.join(CONSTRAINT_TYPES)}"
        )
    for key, typ in CONSTRAINT_TYPES[kind].items():
        value = spec.get(key)
        if typ is int:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InputError(f"{where}: {kind} needs a non-negative integer {key!r}")
        elif typ is list:
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) and v.strip() for v in value)
            ):
                raise InputError(f"{where}: {kind} needs {key!r}, a non-empty list of strings")
        elif not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: {kind} needs a non-empty string {key!r}")
    if kind == "language" and spec["lang"] not in LANGUAGES:
        raise InputError(
            f"{where}: language {spec['lang']!r} is not supported; use an ISO 639-1 code among "
            f"{', '.join(LANGUAGES)}"
        )
    return spec


def parse_constraint(reference: str, where: str = "reference") -> dict[str, Any]:
    """Parse and validate a constraint stored as a JSON string (a conflict prompt's
    ``reference``)."""
    try:
        spec = json.loads(reference)
    except (TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where}: constraint is not valid JSON ({exc})") from None
    return validate_constraint(spec, where)


# --- text helpers ---------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "mr.", "mrs.", "ms.", "dr.", "prof.", "st.")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,3}[.)])\s+\S")
_FENCE = re.compile(r"^```[A-Za-z]*\s*\n?(.*?)\n?```$", re.DOTALL)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _fold(text: str) -> str:
    """Casefold, NFKC, curly quotes made straight, runs of spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'")
    text = text.replace("“", '"').replace("”", '"')
    return re.sub(r"\s+", " ", text).strip().casefold()


def _has_word(word: str, text: str) -> bool:
    pattern = rf"(?<![^\W_]){re.escape(word.strip())}(?![^\W_])"
    return re.search(pattern, text, re.IGNORECASE) is not None


def count_sentences(text: str) -> int:
    """Sentences in ``text`` (the rule of the module docstring)."""
    masked = text
    for abbr in _ABBREVIATIONS:
        pattern = rf"(?<![^\W_]){re.escape(abbr)}"
        masked = re.sub(pattern, abbr.replace(".", "\0"), masked, flags=re.IGNORECASE)
    parts = _SENTENCE_END.split(masked)
    return sum(1 for p in parts if any(c.isalnum() for c in p))


def _strip_end(text: str) -> str:
    text = _fold(text).rstrip(" \"'*_)»")
    return text[:-1].rstrip() if text[-1:] in ".!?" else text


def _json_only(text: str) -> bool:
    fenced = _FENCE.match(text)
    body = fenced.group(1).strip() if fenced else text
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict | list)


def _bullet_list(text: str, min_items: int) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and not _BULLET.match(lines[0]) and lines[0].rstrip().endswith(":"):
        lines = lines[1:]
    return len(lines) >= max(min_items, 1) and all(_BULLET.match(line) for line in lines)


@functools.cache
def _language_identifier() -> Any:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise InputError(
            f"language constraints need the package {LANGID_REQUIREMENT!r}: "
            f"pip install '{LANGID_REQUIREMENT}'"
        ) from None
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LANGUAGES))
    return identifier


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of ``text``'s language among :data:`LANGUAGES`; None without
    letters."""
    if not any(c.isalpha() for c in text):
        return None
    return str(_language_identifier().classify(text)[0])


# --- the checker ----------------------------------------------------------------------------


def check_constraint(spec: dict[str, Any], response: str) -> bool:
    """True when ``response`` obeys the system constraint ``spec``."""
    kind = validate_constraint(spec)["type"]
    text = response.strip()
    if kind == "forbidden_word":
        return not _has_word(spec["word"], text)
    if kind == "required_word":
        return _has_word(spec["word"], text)
    if kind == "must_contain":
        return spec["text"].strip().casefold() in text.casefold()
    if kind == "required_prefix":
        return text.startswith(spec["prefix"].strip())
    if kind == "ends_with":
        return bool(text) and _strip_end(text).endswith(_strip_end(spec["phrase"]))
    if kind in ("uppercase", "lowercase"):
        letters = [c for c in text if c.isalpha()]
        wrong = str.islower if kind == "uppercase" else str.isupper
        return bool(letters) and not any(wrong(c) for c in letters)
    if kind == "max_words":
        return len(_words(text)) <= spec["n"]
    if kind == "max_sentences":
        return 1 <= count_sentences(text) <= spec["n"]
    if kind == "no_commas":
        return "," not in text and "，" not in text
    if kind == "json_only":
        return _json_only(text)
    if kind == "bullet_list":
        return _bullet_list(text, spec["min_items"])
    if kind == "language":
        return detect_language(text) == spec["lang"]
    # topic_limit
    if _fold(spec["fallback"]) in _fold(text):
        return True
    return any(
        re.search(rf"(?<![^\W_]){re.escape(_fold(k))}", _fold(text)) for k in spec["keywords"]
    )
