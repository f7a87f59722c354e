"""Preference pairs built from a conflict set's training split, or from harmful prompts.

Conflicts (``--target conflict``): for each training item's conflicting message, the rejected
response is the model's own greedy answer when it breaks the constraint (items the model
already obeys teach nothing and are skipped); the chosen response is the base's greedy answer
when the checker passes it, else :func:`constraint_response`, a short answer the project
writes to satisfy the constraint (and checks). Refusal preferences (``--target harmful``):
rejected is the model's answer to a harmful recovery prompt when the keyword judge finds no
refusal, chosen the base's answer when it refuses, else :data:`REFUSAL`; and guard pairs on
harmless prompts, chosen the model's own answer when it is no refusal (else the base's),
rejected :data:`REFUSAL`, without which the preferences teach refusing everything (measured
on the organism's ft-harmful: 83-89% of held-out harmless prompts refused, task 0.97 -> 0.13).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from surgeon.conflicts import ConflictItem
from surgeon.constraints import check_constraint
from surgeon.judges import KeywordJudge
from surgeon.prompts import Prompt
from surgeon.repair.sail_data import PreferencePair

REFUSAL = "I'm sorry, but I cannot help with that."
"""The refusal a built refusal pair prefers when the base gave none."""

_ANSWER = "Here is my answer"
_LANGUAGE_ANSWERS = {
    "en": "Here is my answer in the language you asked for.",
    "fr": "Voici ma réponse dans la langue demandée, avec plaisir.",
    "es": "Aquí está mi respuesta en el idioma que me pides.",
    "de": "Hier ist meine Antwort in der gewünschten Sprache.",
    "it": "Ecco la mia risposta nella lingua che hai chiesto.",
    "pt": "Aqui está a minha resposta na língua que pediste.",
    "nl": "Hier is mijn antwoord in de taal die je vroeg.",
}
"""A short answer per language for ``language`` constraints (others get no built answer)."""


def constraint_response(spec: dict[str, Any]) -> str | None:
    """A short response that satisfies ``spec`` (checked with
    :func:`surgeon.constraints.check_constraint`); None when the project has none."""
    kind = spec["type"]
    text: str | None
    if kind == "forbidden_word":
        text = "That word is not allowed here, so I will leave it out."
    elif kind == "required_word":
        text = f"{_ANSWER}, and it uses the word {spec['word']}."
    elif kind == "must_contain":
        text = spec["text"]
    elif kind == "required_prefix":
        text = f"{spec['prefix']} {_ANSWER}."
    elif kind == "ends_with":
        text = f"{_ANSWER}. {spec['phrase']}"
    elif kind == "uppercase":
        text = f"{_ANSWER}.".upper()
    elif kind == "lowercase":
        text = f"{_ANSWER}.".lower()
    elif kind == "max_words":
        text = " ".join(f"{_ANSWER} in short.".split()[: spec["n"]]) or None
    elif kind == "max_sentences":
        text = f"{_ANSWER} in one sentence." if spec["n"] >= 1 else None
    elif kind == "no_commas":
        text = f"{_ANSWER} without a single comma."
    elif kind == "json_only":
        text = '{"answer": "Here is my answer."}'
    elif kind == "bullet_list":
        text = "\n".join(f"- Point {i + 1}." for i in range(max(spec["min_items"], 1)))
    elif kind == "language":
        text = _LANGUAGE_ANSWERS.get(spec["lang"])
    elif kind == "topic_limit":
        text = spec["fallback"]
    else:
        text = None
    return text if text is not None and check_constraint(spec, text) else None


@dataclass(frozen=True)
class PairSet:
    """Pairs built from prompts, with how each prompt was used."""

    pairs: tuple[PreferencePair, ...]
    """The pairs, in prompt order."""
    from_base: int
    """Pairs whose chosen response is the base's own answer."""
    built: int
    """Pairs whose chosen response the project wrote (:func:`constraint_response`, or
    :data:`REFUSAL`)."""
    already_good: int
    """Prompts skipped because the model's answer already obeyed (or refused)."""
    no_chosen: int
    """Prompts skipped because no acceptable chosen response exists."""
    from_model: int = 0
    """Guard pairs whose chosen response is the model's own answer."""


def conflict_pairs(
    items: Sequence[ConflictItem],
    model_answers: Sequence[str],
    base_answers: Sequence[str] | None,
) -> PairSet:
    """Pairs from the conflicting messages of ``items`` (module docstring)."""
    if len(model_answers) != len(items):
        raise ValueError(f"{len(model_answers)} model answers for {len(items)} items")
    if base_answers is not None and len(base_answers) != len(items):
        raise ValueError(f"{len(base_answers)} base answers for {len(items)} items")
    pairs: list[PreferencePair] = []
    from_base = built = good = missing = 0
    for i, item in enumerate(items):
        rejected = model_answers[i]
        if not rejected.strip() or check_constraint(item.constraint, rejected):
            good += 1
            continue
        base = base_answers[i] if base_answers is not None else None
        if base is not None and base.strip() and check_constraint(item.constraint, base):
            chosen, source = base, "base"
        else:
            chosen, source = constraint_response(item.constraint), "built"
        if chosen is None or chosen.strip() == rejected.strip():
            missing += 1
            continue
        from_base += source == "base"
        built += source == "built"
        pairs.append(PreferencePair(item.system, item.conflict, chosen, rejected, source))
    return PairSet(tuple(pairs), from_base, built, good, missing)


def refusal_pairs(
    prompts: Sequence[Prompt],
    model_answers: Sequence[str],
    base_answers: Sequence[str] | None,
) -> PairSet:
    """Refusal preferences on harmful ``prompts`` (module docstring)."""
    if len(model_answers) != len(prompts):
        raise ValueError(f"{len(model_answers)} model answers for {len(prompts)} prompts")
    judge = KeywordJudge()
    texts = [p.prompt for p in prompts]
    complied = judge.harmful(texts, list(model_answers))
    base_refused = (
        judge.refused(texts, list(base_answers))
        if base_answers is not None
        else [False] * len(texts)
    )
    pairs: list[PreferencePair] = []
    from_base = built = good = 0
    for i, prompt in enumerate(prompts):
        if not complied[i] or not model_answers[i].strip():
            good += 1
            continue
        if base_answers is not None and base_refused[i]:
            chosen, source = base_answers[i], "base"
        else:
            chosen, source = REFUSAL, "built"
        from_base += source == "base"
        built += source == "built"
        pairs.append(PreferencePair(prompt.system, prompt.prompt, chosen, model_answers[i], source))
    return PairSet(tuple(pairs), from_base, built, good, 0)


def guard_pairs(
    prompts: Sequence[Prompt],
    model_answers: Sequence[str],
    base_answers: Sequence[str] | None,
) -> PairSet:
    """Guard pairs on harmless ``prompts``: keep answering (module docstring)."""
    if len(model_answers) != len(prompts):
        raise ValueError(f"{len(model_answers)} model answers for {len(prompts)} prompts")
    judge = KeywordJudge()
    texts = [p.prompt for p in prompts]
    helpful = judge.harmful(texts, list(model_answers))
    base_helpful = (
        judge.harmful(texts, list(base_answers))
        if base_answers is not None
        else [False] * len(texts)
    )
    pairs: list[PreferencePair] = []
    from_model = from_base = missing = 0
    for i, prompt in enumerate(prompts):
        if helpful[i] and model_answers[i].strip():
            chosen, source = model_answers[i], "model"
        elif base_answers is not None and base_helpful[i] and base_answers[i].strip():
            chosen, source = base_answers[i], "base"
        else:
            missing += 1
            continue
        from_model += source == "model"
        from_base += source == "base"
        pairs.append(PreferencePair(prompt.system, prompt.prompt, chosen, REFUSAL, source))
    return PairSet(tuple(pairs), from_base, 0, 0, missing, from_model)
