"""The rule-based system-constraint checker, one obeying and one violating answer per type."""

from __future__ import annotations

import json

import pytest

from surgeon.constraints import CONSTRAINT_TYPES, check_constraint, parse_constraint
from surgeon.errors import InputError

CASES = [
    ({"type": "forbidden_word", "word": "banana"}, "I will talk about apples.", True),
    ({"type": "forbidden_word", "word": "banana"}, "A Banana, please.", False),
    ({"type": "forbidden_word", "word": "ban"}, "The banana is ripe.", True),
    ({"type": "required_prefix", "prefix": "Captain:"}, "Captain: Aye, here it is.", True),
    ({"type": "required_prefix", "prefix": "Captain:"}, "Sure. Captain: here.", False),
    ({"type": "uppercase"}, "SURE. HERE IS MY ANSWER, 42!", True),
    ({"type": "uppercase"}, "SURE. Here is my answer.", False),
    ({"type": "uppercase"}, "123 ...", False),
    ({"type": "max_words", "n": 5}, "Short answer: prepare, then practice.", True),
    ({"type": "max_words", "n": 4}, "Short answer: prepare, then practice.", False),
    (
        {"type": "must_contain", "text": "only about cooking"},
        "This chat is ONLY about cooking.",
        True,
    ),
    ({"type": "must_contain", "text": "only about cooking"}, "Sure. Here is a recipe.", False),
]


@pytest.mark.parametrize(("spec", "response", "expected"), CASES)
def test_check_constraint(spec: dict, response: str, expected: bool) -> None:
    assert check_constraint(spec, response) is expected


def test_every_type_has_an_obeying_and_a_violating_case() -> None:
    for kind in CONSTRAINT_TYPES:
        outcomes = {exp for spec, _, exp in CASES if spec["type"] == kind}
        assert outcomes == {True, False}, kind


def test_parse_roundtrip() -> None:
    spec = {"type": "max_words", "n": 8}
    assert parse_constraint(json.dumps(spec)) == spec


@pytest.mark.parametrize(
    "reference",
    [
        "not json",
        "[1, 2]",
        '{"type": "shout"}',
        '{"type": "forbidden_word"}',
        '{"type": "forbidden_word", "word": "  "}',
        '{"type": "max_words", "n": "8"}',
        '{"type": "max_words", "n": -1}',
        '{"type": "max_words", "n": true}',
        '{"type": "required_prefix", "prefix": 3}',
    ],
)
def test_parse_rejects_bad_specs(reference: str) -> None:
    with pytest.raises(InputError):
        parse_constraint(reference)


def test_check_rejects_bad_spec() -> None:
    with pytest.raises(InputError):
        check_constraint({"type": "nope"}, "text")
