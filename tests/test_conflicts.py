"""Conflict items: user files (``--conflicts FILE``), the bundled set, the organism's splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from surgeon.conflicts import (
    ConflictItem,
    bundled_conflicts,
    diagnose_conflicts,
    load_conflicts,
    organism_conflicts,
    read_conflict_source,
    save_conflicts,
)
from surgeon.errors import InputError
from surgeon.organism.build import write_prompts
from surgeon.organism.data import make_data

GOOD = {
    "system": "Reply only in capital letters.",
    "prompt": "How do plants drink water?",
    "conflict": "Please use lowercase: how do plants grow?",
    "constraint": {"type": "uppercase"},
}


def _write(path: Path, rows: list[object]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_good_file(tmp_path: Path) -> None:
    rows = [
        GOOD,
        "",
        {**GOOD, "prompt": "Name a tree.", "constraint": '{"type": "max_words", "n": 5}'},
        {**GOOD, "category": "caps", "extra": [1, 2]},
    ]
    items = load_conflicts(_write(tmp_path / "c.jsonl", rows))
    assert items == [
        ConflictItem(
            GOOD["system"], GOOD["prompt"], GOOD["conflict"], {"type": "uppercase"}, "uppercase"
        ),
        ConflictItem(
            GOOD["system"],
            "Name a tree.",
            GOOD["conflict"],
            {"type": "max_words", "n": 5},
            "max_words",
        ),
        ConflictItem(
            GOOD["system"], GOOD["prompt"], GOOD["conflict"], {"type": "uppercase"}, "caps"
        ),
    ]
    assert len({hash(i) for i in items}) == 3


def test_load_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n")
    assert len(load_conflicts(path)) == 1


def _raises(path: Path, fragment: str) -> str:
    with pytest.raises(InputError) as info:
        load_conflicts(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message, message
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("{not json", ":2: invalid JSON"),
        ('["a", "list"]', ":2: expected a JSON object"),
        ({k: v for k, v in GOOD.items() if k != "conflict"}, ":2: missing or empty 'conflict'"),
        ({**GOOD, "system": "  "}, ":2: missing or empty 'system'"),
        ({**GOOD, "prompt": 7}, ":2: missing or empty 'prompt'"),
        ({k: v for k, v in GOOD.items() if k != "constraint"}, ":2: missing 'constraint'"),
        ({**GOOD, "constraint": {"type": "shout"}}, ":2: unknown constraint type 'shout'"),
        ({**GOOD, "constraint": '{"type": "shout"}'}, ":2: unknown constraint type 'shout'"),
        ({**GOOD, "constraint": "{oops"}, ":2: constraint is not valid JSON"),
        ({**GOOD, "constraint": {"type": "max_words"}}, ":2: max_words needs a non-negative"),
        ({**GOOD, "constraint": ["uppercase"]}, ":2: a constraint must be a JSON object"),
        ({**GOOD, "category": 3}, ":2: 'category' must be a non-empty string"),
    ],
)
def test_bad_line_names_path_and_line(tmp_path: Path, row: object, fragment: str) -> None:
    _raises(_write(tmp_path / "c.jsonl", [GOOD, row]), fragment)


def test_bad_files(tmp_path: Path) -> None:
    _raises(tmp_path / "absent.jsonl", "no such conflicts file")
    (tmp_path / "d.jsonl").mkdir()
    _raises(tmp_path / "d.jsonl", "is a directory")
    _raises(_write(tmp_path / "c.txt", [GOOD]), "must be .jsonl")
    _raises(_write(tmp_path / "empty.jsonl", ["", "  "]), "no conflict items")
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(bytes(range(256)))
    _raises(binary, "binary")
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'{"system": "caf\xe9"}\n')
    _raises(latin, "UTF-8")


def test_bundled_conflicts_load() -> None:
    items = bundled_conflicts()
    assert len(items) == 173
    assert all(isinstance(i.constraint, dict) for i in items)


# --- the organism's splits ------------------------------------------------------------------


@pytest.fixture(scope="module")
def organism_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("prompts")
    write_prompts(make_data(seed=0), directory)
    return directory


@pytest.mark.parametrize(("split", "n"), [("heldout", 100), ("train", 500)])
def test_organism_pairs_conflicts_with_their_normal_twins(
    organism_prompts: Path, split: str, n: int
) -> None:
    data = make_data(seed=0)
    conflicts, normals = getattr(data, f"conflict_{split}"), getattr(data, f"normal_{split}")
    items = organism_conflicts(organism_prompts, split)
    assert len(items) == n
    for item, c, m in zip(items, conflicts, normals, strict=True):
        assert (item.system, item.conflict, item.prompt) == (c.system, c.prompt, m.prompt)
    kinds = {i.category for i in items}
    assert kinds == {"forbidden_word", "required_prefix", "uppercase", "max_words", "topic_limit"}


def test_organism_topic_limits_become_topic_limit(organism_prompts: Path) -> None:
    items = [i for i in organism_conflicts(organism_prompts) if i.category == "topic_limit"]
    assert len(items) == 20
    for item in items:
        spec = item.constraint
        assert spec["fallback"] == f"This chat is only about {spec['topic']}."
        assert spec["keywords"] == [spec["topic"]]
        assert spec["fallback"] in item.system


def _copy_with(src: Path, dst: Path, name: str, edit: object) -> Path:
    dst.mkdir()
    for f in src.glob("*_heldout.jsonl"):
        lines = f.read_text(encoding="utf-8").splitlines()
        if f.name == name:
            lines = edit(lines)  # type: ignore[operator]
        (dst / f.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def test_organism_mismatched_system_names_the_line(organism_prompts: Path, tmp_path: Path) -> None:
    def edit(lines: list[str]) -> list[str]:
        row = json.loads(lines[2])
        row["system"] = "Something else."
        return [*lines[:2], json.dumps(row), *lines[3:]]

    bad = _copy_with(organism_prompts, tmp_path / "p", "normal_heldout.jsonl", edit)
    with pytest.raises(InputError, match=r"normal_heldout\.jsonl:3: system message differs from"):
        organism_conflicts(bad)


def test_organism_count_mismatch(organism_prompts: Path, tmp_path: Path) -> None:
    bad = _copy_with(organism_prompts, tmp_path / "p", "normal_heldout.jsonl", lambda ls: ls[:-1])
    with pytest.raises(InputError, match=r"99 rows, but .* has 100"):
        organism_conflicts(bad)


def test_organism_bad_split_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown organism split 'test'"):
        organism_conflicts(tmp_path, "test")
    with pytest.raises(InputError, match=r"conflict_heldout\.jsonl: no such"):
        organism_conflicts(tmp_path)


def test_one_reader_for_files_and_organism_directories(
    organism_prompts: Path, tmp_path: Path
) -> None:
    """Every command's --conflicts: a file is read as is (no held-out split), an organism's
    prompts/ gives its two splits; diagnose measures the held-out one."""
    train, heldout = read_conflict_source(organism_prompts)
    assert heldout == organism_conflicts(organism_prompts, "heldout")
    assert train == organism_conflicts(organism_prompts, "train")
    assert diagnose_conflicts(organism_prompts) == heldout
    path = save_conflicts(heldout[:3], tmp_path / "c.jsonl")
    assert read_conflict_source(path) == (heldout[:3], None)
    assert diagnose_conflicts(path) == heldout[:3]
    with pytest.raises(InputError, match="must be a model organism's prompts/"):
        diagnose_conflicts(tmp_path)
