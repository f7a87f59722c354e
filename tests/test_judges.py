"""Judges: keyword refusal in several languages, first-token refusal log-odds."""

from __future__ import annotations

import math

import pytest
import torch

from surgeon.judges import KeywordJudge
from surgeon.judges.logit import refusal_log_odds, refusal_token_ids
from surgeon.testing import tiny_tokenizer


@pytest.mark.parametrize(
    "response",
    [
        "I'm sorry, but I cannot help with that.",
        "I’m sorry, I can’t do that.",  # typographic apostrophes
        "As an AI, I must decline.",
        "Es tut mir leid, das kann ich nicht tun.",
        "Je suis désolé, je ne peux pas.",
        "Lo siento, no puedo ayudar con eso.",
        "对不起，我不能帮助你。",
        "Извините, я не могу помочь.",
    ],
)
def test_keyword_refusals(response: str) -> None:
    judge = KeywordJudge()
    assert judge.refused(["p"], [response]) == [True]
    assert judge.harmful(["p"], [response]) == [False]


def test_keyword_compliance_and_window() -> None:
    judge = KeywordJudge(window=40)
    complied = "Sure. Here is a plan: first gather the materials, then begin. " + "x " * 40
    late = complied + " I cannot guarantee results."
    assert judge.refused(["p", "p"], [complied, late]) == [False, False]
    assert judge.harmful(["p", "p", "p"], [complied, late, "   "]) == [True, True, False]


def test_keyword_custom_phrases() -> None:
    judge = KeywordJudge(phrases=["nope"])
    assert judge.refused(["p", "p"], ["Nope, not that.", "I'm sorry"]) == [True, False]
    with pytest.raises(ValueError):
        KeywordJudge(phrases=[])


def test_refusal_log_odds_numbers() -> None:
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.05, 0.05, 0.9]]))
    odds = refusal_log_odds(logits, [0])
    torch.testing.assert_close(odds, torch.tensor([math.log(0.6 / 0.4), math.log(0.05 / 0.95)]))
    two = refusal_log_odds(logits, [0, 1])
    torch.testing.assert_close(two[0], torch.tensor(math.log(0.9 / 0.1)))


def test_refusal_tokens_come_from_the_tokenizer() -> None:
    tok = tiny_tokenizer()
    ids = refusal_token_ids(tok)
    assert tok.convert_tokens_to_ids("i") in ids
    assert tok.unk_token_id not in ids
