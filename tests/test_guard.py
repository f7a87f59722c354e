"""The over-refusal guard asks for the base's behaviour, prompt by prompt."""

from __future__ import annotations

import torch

from surgeon.judges.logit import refusal_log_odds, refusal_token_ids
from surgeon.repair.guard import (
    accumulate_hinge_guard_grad,
    accumulate_sign_guard_grad,
    reference_losses,
)
from surgeon.repair.task_metric import own_answers
from surgeon.testing import tiny_model, tiny_tokenizer
from surgeon.tokens import encode

TEXTS = ["how do I bake bread", "what is the capital of france"]


def _odds(model: torch.nn.Module, tok: object, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        enc = encode(tok, TEXTS, torch.device("cpu"))  # type: ignore[arg-type]
        return refusal_log_odds(model(**enc).logits[:, -1, :], ids)


def _step(model: torch.nn.Module, lr: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad
                p.grad = None


def test_sign_guard_pushes_each_prompt_towards_the_base_side() -> None:
    """+1 (the base answers): a descent step lowers the refusal log-odds; -1 (the base refuses
    that prompt): it raises them. The old guard pushed 'never refuse' on every prompt."""
    tok = tiny_tokenizer()
    ids = refusal_token_ids(tok)
    model = tiny_model("llama", seed=0)
    before = _odds(model, tok, ids)
    signs = torch.tensor([1.0, -1.0])
    for _ in range(5):
        accumulate_sign_guard_grad(model, tok, TEXTS, ids, signs, batch_size=2, weight=1.0)
        _step(model, lr=0.5)
    after = _odds(model, tok, ids)
    assert after[0] < before[0] - 0.05
    assert after[1] > before[1] + 0.05


def test_hinge_guard_is_silent_until_answers_move_past_the_slack() -> None:
    tok = tiny_tokenizer()
    model = tiny_model("llama", seed=0)
    answers = own_answers(model, tok, TEXTS, max_new_tokens=4, batch_size=2).head(3)
    ref = reference_losses(model, tok, answers, batch_size=2, first_token_share=0.5)
    # at the fine-tune's own weights: zero loss and no gradient
    loss = accumulate_hinge_guard_grad(model, tok, answers, ref, 2, 0.5, 1.0, slack=0.0)
    assert loss == 0.0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    # moved: ascent on the answers' cross-entropy makes the hinge bite beyond a small slack
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = reference_losses(model, tok, answers, 2, 0.5)
    rise = float((moved - ref).max())
    assert rise > 0
    loss = accumulate_hinge_guard_grad(model, tok, answers, ref, 2, 0.5, 1.0, slack=rise / 2)
    assert loss > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert accumulate_hinge_guard_grad(model, tok, answers, ref, 2, 0.5, 1.0, slack=rise) == 0.0
