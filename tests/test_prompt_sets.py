"""The bundled prompt sets (surgeon/data) and the prompt file loader (surgeon.prompts)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from surgeon.conflicts import bundled_conflicts
from surgeon.constraints import CONSTRAINT_TYPES
from surgeon.errors import InputError
from surgeon.prompts import BUNDLED, Prompt, bundled_path, load_bundled, load_prompts

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "tools" / "make_prompt_sets.py"
STATED = {
    "forbidden_word": "word",
    "required_word": "word",
    "must_contain": "text",
    "required_prefix": "prefix",
    "ends_with": "phrase",
    "topic_limit": "fallback",
}
"""Constraint types whose text field the system instruction states, and that field."""


def _texts(name: str) -> list[str]:
    return [p.prompt for p in load_bundled(name)]


# --- bundled sets ---------------------------------------------------------------------------


def test_harmful_counts_and_categories() -> None:
    prompts = load_bundled("harmful")
    assert len(prompts) >= 240
    counts = Counter(p.category for p in prompts)
    assert None not in counts
    assert len(counts) >= 6
    assert min(counts.values()) >= 25, counts
    assert all(p.system is None and p.reference is None for p in prompts)


def test_harmless_counts_and_categories() -> None:
    prompts = load_bundled("harmless")
    assert len(prompts) >= 240
    counts = Counter(p.category for p in prompts)
    assert None not in counts
    assert len(counts) >= 6
    assert min(counts.values()) >= 20, counts


def test_harmful_and_harmless_have_similar_lengths() -> None:
    harmful = [len(t.split()) for t in _texts("harmful")]
    harmless = [len(t.split()) for t in _texts("harmless")]
    ratio = statistics.mean(harmless) / statistics.mean(harmful)
    assert 0.8 <= ratio <= 1.25, ratio


def test_over_refusal_counts_and_categories() -> None:
    prompts = load_bundled("over_refusal")
    assert len(prompts) >= 60
    counts = Counter(p.category for p in prompts)
    assert set(counts) == {"homonym", "figurative", "safe_context", "historical", "definitions"}
    assert min(counts.values()) >= 10, counts


@pytest.mark.parametrize("name", BUNDLED)
def test_no_duplicates(name: str) -> None:
    texts = [t.lower() for t in _texts(name)]
    assert len(texts) == len(set(texts))


def test_no_prompt_shared_between_sets() -> None:
    seen: dict[str, str] = {}
    for name in BUNDLED:
        for text in _texts(name):
            key = text.lower()
            assert key not in seen, f"{text!r} in both {seen[key]} and {name}"
            seen[key] = name


def test_conflict_set_counts_and_types() -> None:
    items = bundled_conflicts()
    assert len(items) >= 160
    counts = Counter(i.constraint["type"] for i in items)
    assert len(counts) >= 10, counts
    assert set(counts) == set(CONSTRAINT_TYPES), counts
    assert min(counts.values()) >= 10, counts
    for item in items:
        assert item.category == item.constraint["type"], item
        assert set(item.constraint) == {"type", *CONSTRAINT_TYPES[item.category]}, item


def test_conflict_file_lines_are_items_with_object_constraints() -> None:
    for line in bundled_path("conflicts").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert list(row) == ["system", "prompt", "conflict", "constraint", "category"], row
        assert isinstance(row["constraint"], dict), row


def test_conflict_messages_are_distinct() -> None:
    items = bundled_conflicts()
    for key in ("prompt", "conflict"):
        texts = [getattr(i, key).lower() for i in items]
        assert len(texts) == len(set(texts)), key
    others = {t.lower() for name in ("harmful", "harmless", "over_refusal") for t in _texts(name)}
    assert not others & {i.conflict.lower() for i in items}
    assert all(i.prompt != i.conflict for i in items)


def test_conflict_system_states_its_constraint() -> None:
    """The text a checker looks for (word, prefix, phrase, fallback) is in the instruction."""
    checked = 0
    for item in bundled_conflicts():
        field = STATED.get(item.category)
        if field is not None:
            assert item.constraint[field].lower() in item.system.lower(), item
            checked += 1
        if item.category in ("max_words", "max_sentences"):
            n = item.constraint["n"]
            words = {1: ("one", "single"), 2: ("two",), 3: ("three",)}.get(n, ())
            assert str(n) in item.system or any(w in item.system.lower() for w in words), item
    assert checked >= 70


def test_conflict_user_messages_never_state_the_forbidden_word() -> None:
    """The user elicits a forbidden word, never writes it, in either message."""
    n = 0
    for item in bundled_conflicts():
        if item.category == "forbidden_word":
            word = item.constraint["word"].lower()
            for text in (item.prompt, item.conflict):
                assert word not in re.findall(r"[a-z]+", text.lower()), item
            n += 1
    assert n >= 10


def test_required_text_is_not_handed_over_by_the_conflict() -> None:
    """A conflict asking to leave out a required word or phrase does not itself contain it
    (an echo of the user would otherwise look obedient)."""
    for item in bundled_conflicts():
        if item.category in ("required_word", "must_contain", "ends_with"):
            text = item.constraint[STATED[item.category]].lower().rstrip(".!?")
            assert text not in item.conflict.lower(), item


def test_generator_reproduces_shipped_files(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    for name in BUNDLED:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == bundled_path(name).read_bytes(), name


def test_generator_check_flags_stale_file(tmp_path: Path) -> None:
    args = [sys.executable, str(GENERATOR), "--out", str(tmp_path)]
    subprocess.run(args, capture_output=True, check=True, timeout=60)
    ok = subprocess.run([*args, "--check"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout
    stale = tmp_path / "harmless.jsonl"
    stale.write_bytes(stale.read_bytes()[:-1])
    bad = subprocess.run([*args, "--check"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "harmless.jsonl" in bad.stdout


def test_unknown_bundled_name() -> None:
    with pytest.raises(InputError, match="nonexistent"):
        load_bundled("nonexistent")


# --- load_prompts: formats ------------------------------------------------------------------


def test_load_txt_skips_blank_lines_and_strips(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("  first prompt  \n\n\nsecond prompt\r\nthird\n", encoding="utf-8")
    assert load_prompts(path) == [Prompt("first prompt"), Prompt("second prompt"), Prompt("third")]


def test_load_jsonl_with_optional_fields(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "a", "category": "x"},
        {"prompt": "b", "system": "Be brief.", "reference": '{"type":"uppercase"}'},
        {"prompt": "c", "extra": 3},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert load_prompts(path) == [
        Prompt("a", category="x"),
        Prompt("b", system="Be brief.", reference='{"type":"uppercase"}'),
        Prompt("c"),
    ]


def test_load_jsonl_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "caf\xc3\xa9"}\r\n')
    assert load_prompts(path) == [Prompt("café")]


def test_load_csv_with_quotes_commas_and_newlines(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('category,prompt\nx,"has, a comma"\ny,"two\nlines"\n,plain\n', encoding="utf-8")
    assert load_prompts(path) == [
        Prompt("has, a comma", category="x"),
        Prompt("two\nlines", category="y"),
        Prompt("plain"),
    ]


# --- load_prompts: errors name the file -----------------------------------------------------


def _raises_naming(path: Path, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        load_prompts(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message


def test_missing_file(tmp_path: Path) -> None:
    _raises_naming(tmp_path / "absent.jsonl", "no such")


def test_directory(tmp_path: Path) -> None:
    _raises_naming(tmp_path, "directory")


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"" if suffix != ".csv" else b"prompt\n")
    _raises_naming(path, "no prompts")


def test_blank_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\t\n", encoding="utf-8")
    _raises_naming(path, "no prompts")


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.txt"
    path.write_bytes(bytes(range(256)) * 4)
    _raises_naming(path, "binary")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    _raises_naming(path, "UTF-8")


def test_jsonl_line_without_prompt(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"text": "no prompt key"}\n', encoding="utf-8")
    _raises_naming(path, ":2: missing or empty 'prompt'")


def test_jsonl_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": \n', encoding="utf-8")
    _raises_naming(path, ":2: invalid JSON")


def test_jsonl_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('["a list"]\n', encoding="utf-8")
    _raises_naming(path, ":1: expected a JSON object")


def test_jsonl_non_string_field(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok", "category": 7}\n', encoding="utf-8")
    _raises_naming(path, "'category' must be a string")


def test_csv_without_prompt_column(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("text,category\nhello,x\n", encoding="utf-8")
    _raises_naming(path, "no 'prompt' column")


def test_csv_row_with_empty_prompt(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prompt,category\nfine,x\n,y\n", encoding="utf-8")
    _raises_naming(path, ":3: missing or empty 'prompt'")


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("prompt: hi\n", encoding="utf-8")
    _raises_naming(path, "unknown prompt file type")
