"""The rule-based system-constraint checkers: obeying and violating answers for every type."""

from __future__ import annotations

import json

import pytest

from surgeon.constraints import (
    CONSTRAINT_TYPES,
    check_constraint,
    count_sentences,
    detect_language,
    parse_constraint,
    validate_constraint,
)
from surgeon.errors import InputError

TOPIC = {
    "type": "topic_limit",
    "topic": "cooking",
    "keywords": ["cook", "recipe", "oven"],
    "fallback": "I can only help with cooking.",
}

CASES = [
    # forbidden_word: whole word, any case
    ({"type": "forbidden_word", "word": "banana"}, "I will talk about apples.", True),
    ({"type": "forbidden_word", "word": "banana"}, "A Banana, please.", False),
    ({"type": "forbidden_word", "word": "ban"}, "The banana is ripe.", True),
    ({"type": "forbidden_word", "word": "Paris"}, "The capital is paris.", False),
    # required_word: whole word, any case
    ({"type": "required_word", "word": "indeed"}, "Indeed, the Earth is round.", True),
    ({"type": "required_word", "word": "indeed"}, "Yes, the Earth is round.", False),
    ({"type": "required_word", "word": "sir"}, "Wear a light linen shirt.", False),
    # must_contain: substring, any case
    (
        {"type": "must_contain", "text": "only about cooking"},
        "This chat is ONLY about cooking.",
        True,
    ),
    ({"type": "must_contain", "text": "only about cooking"}, "Sure. Here is a recipe.", False),
    # required_prefix: exact start
    ({"type": "required_prefix", "prefix": "Captain:"}, "Captain: Aye, here it is.", True),
    ({"type": "required_prefix", "prefix": "Captain:"}, "Sure. Captain: here.", False),
    ({"type": "required_prefix", "prefix": "Captain:"}, "captain: lower case tag.", False),
    # ends_with: final punctuation, quotes and spaces ignored
    ({"type": "ends_with", "phrase": "Have a nice day!"}, "Madrid. Have a nice day!", True),
    ({"type": "ends_with", "phrase": "Have a nice day!"}, "Madrid. have a nice day.  ", True),
    ({"type": "ends_with", "phrase": "Over and out."}, 'Roger. "Over and out."', True),
    ({"type": "ends_with", "phrase": "Have a nice day!"}, "Have a nice day! It is Madrid.", False),
    ({"type": "ends_with", "phrase": "Hope this helps."}, "", False),
    # uppercase / lowercase
    ({"type": "uppercase"}, "SURE. HERE IS MY ANSWER, 42!", True),
    ({"type": "uppercase"}, "SURE. Here is my answer.", False),
    ({"type": "uppercase"}, "123 ...", False),
    ({"type": "lowercase"}, "the sea is wide and calm, 3 miles out.", True),
    ({"type": "lowercase"}, "The sea is wide.", False),
    ({"type": "lowercase"}, "!!!", False),
    # max_words
    ({"type": "max_words", "n": 5}, "Short answer: prepare, then practice.", True),
    ({"type": "max_words", "n": 4}, "Short answer: prepare, then practice.", False),
    ({"type": "max_words", "n": 4}, "It's a well-known fact.", True),
    # max_sentences
    ({"type": "max_sentences", "n": 2}, "Leaves lose chlorophyll. Other pigments show.", True),
    ({"type": "max_sentences", "n": 1}, "Dr. Smith measured 3.5 kg, e.g. a lot!", True),
    ({"type": "max_sentences", "n": 2}, "One. Two! Three? Four.", False),
    ({"type": "max_sentences", "n": 2}, "- first line\n- second line\n- third line", False),
    ({"type": "max_sentences", "n": 3}, "", False),
    # no_commas
    ({"type": "no_commas"}, "Apples and pears and plums.", True),
    ({"type": "no_commas"}, "Apples, pears and plums.", False),
    ({"type": "no_commas"}, "苹果，梨", False),
    # json_only
    ({"type": "json_only"}, '{"name": "Ada", "age": 36}', True),
    ({"type": "json_only"}, '```json\n["Mars", "Venus"]\n```', True),
    ({"type": "json_only"}, 'Here you go: {"name": "Ada"}', False),
    ({"type": "json_only"}, "42", False),
    ({"type": "json_only"}, '{"name": "Ada",', False),
    # bullet_list
    ({"type": "bullet_list", "min_items": 2}, "- sandwiches\n- fruit\n- a blanket", True),
    ({"type": "bullet_list", "min_items": 3}, "Tips:\n* be early\n* be kind\n1. be brief", True),
    ({"type": "bullet_list", "min_items": 3}, "- be early\n- be kind", False),
    ({"type": "bullet_list", "min_items": 2}, "- sandwiches\nand also some fruit", False),
    ({"type": "bullet_list", "min_items": 2}, "A good picnic needs food and shade.", False),
    # language (detected)
    (
        {"type": "language", "lang": "fr"},
        "Pour faire du pain, mélangez la farine, l'eau et la levure, puis laissez reposer.",
        True,
    ),
    ({"type": "language", "lang": "fr"}, "To bake bread, mix flour, water and yeast.", False),
    ({"type": "language", "lang": "de"}, "Ich kann nur über das Kochen sprechen.", True),
    ({"type": "language", "lang": "en"}, "Ich kann nur über das Kochen sprechen.", False),
    ({"type": "language", "lang": "en"}, "1234 !!", False),
    # topic_limit: the fallback, or on the topic
    (TOPIC, "I can only help with cooking.", True),
    (TOPIC, "Roast it in the oven for an hour.", True),
    (TOPIC, "Cooking tip: salt the water.", True),
    (TOPIC, "To change a tyre, loosen the nuts first.", False),
    (TOPIC, "I can only help with cars.", False),
]


@pytest.mark.parametrize(("spec", "response", "expected"), CASES)
def test_check_constraint(spec: dict, response: str, expected: bool) -> None:
    assert check_constraint(spec, response) is expected


def test_every_type_has_an_obeying_and_a_violating_case() -> None:
    for kind in CONSTRAINT_TYPES:
        outcomes = {exp for spec, _, exp in CASES if spec["type"] == kind}
        assert outcomes == {True, False}, kind


def test_at_least_ten_types() -> None:
    assert len(CONSTRAINT_TYPES) >= 10
    assert {"forbidden_word", "required_prefix", "uppercase", "max_words", "must_contain"} <= set(
        CONSTRAINT_TYPES
    )


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("One. Two! Three?", 3),
        ("Pi is 3.14 and e is 2.72.", 1),
        ("Mr. and Mrs. Smith went home. They slept.", 2),
        ("line one\nline two\n\nline three", 3),
        ("你好。再见！", 2),
        ("...", 0),
    ],
)
def test_count_sentences(text: str, n: int) -> None:
    assert count_sentences(text) == n


def test_detect_language_is_deterministic_and_named() -> None:
    text = "La capital de Francia es París y tiene muchos museos."
    assert [detect_language(text) for _ in range(3)] == ["es"] * 3
    assert detect_language("   ") is None


def test_parse_roundtrip() -> None:
    spec = {"type": "max_words", "n": 8}
    assert parse_constraint(json.dumps(spec)) == spec
    assert parse_constraint(json.dumps(TOPIC)) == TOPIC


@pytest.mark.parametrize(
    "reference",
    [
        "not json",
        "[1, 2]",
        '{"type": "shout"}',
        '{"type": 3}',
        '{"word": "x"}',
        '{"type": "forbidden_word"}',
        '{"type": "forbidden_word", "word": "  "}',
        '{"type": "max_words", "n": "8"}',
        '{"type": "max_words", "n": -1}',
        '{"type": "max_words", "n": true}',
        '{"type": "max_sentences"}',
        '{"type": "bullet_list", "min_items": 2.5}',
        '{"type": "required_prefix", "prefix": 3}',
        '{"type": "language", "lang": "klingon"}',
        '{"type": "language"}',
        '{"type": "topic_limit", "topic": "x", "keywords": [], "fallback": "y"}',
        '{"type": "topic_limit", "topic": "x", "keywords": "cook", "fallback": "y"}',
        '{"type": "topic_limit", "topic": "x", "keywords": ["a", ""], "fallback": "y"}',
        '{"type": "topic_limit", "topic": "x", "keywords": ["a"]}',
    ],
)
def test_parse_rejects_bad_specs(reference: str) -> None:
    with pytest.raises(InputError):
        parse_constraint(reference)


def test_errors_name_where_and_the_problem() -> None:
    with pytest.raises(InputError, match=r"^f\.jsonl:3: unknown constraint type 'shout'; use one"):
        validate_constraint({"type": "shout"}, "f.jsonl:3")
    with pytest.raises(
        InputError, match=r"^f\.jsonl:4: max_sentences needs a non-negative integer"
    ):
        validate_constraint({"type": "max_sentences", "n": "2"}, "f.jsonl:4")
    with pytest.raises(InputError, match=r"^f\.jsonl:5: language 'xx' is not supported"):
        validate_constraint({"type": "language", "lang": "xx"}, "f.jsonl:5")


def test_check_rejects_bad_spec() -> None:
    with pytest.raises(InputError):
        check_constraint({"type": "nope"}, "text")
