"""The over-refusal guard's loss: keep the base's own behaviour on harmless guard prompts.

What the loss asks for is the base's behaviour, prompt by prompt: an answer where the base
answers, a refusal where the base refuses (judged from the base's generated answer). How it
asks depends on the refusal proxy that calibration trusted:

- ``first-token`` (the refusal tokens tell a refusal from an answer in this vocabulary):
  ``softplus(s * refusal log-odds)`` of the first answer token, ``s = +1`` where the base
  answers and ``-1`` where it refuses. Near zero while each prompt keeps the base's side,
  so it costs the selection nothing until a restoration starts to flip one.
- ``generation`` (a refusal and an answer share their first token): a hinge on the
  cross-entropy of the base's first ``guard_tokens`` answer tokens,
  ``relu(CE_W - CE_F - slack)``: zero while those answers stay about as likely as in the
  fine-tune, growing once a restoration pushes a prompt away from the base's behaviour. It
  never asks the selection to restore the rest of the base's harmless answers (the task
  guard's business).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from surgeon.generation import forward_kwargs, model_device
from surgeon.judges.logit import refusal_log_odds
from surgeon.repair.task_metric import (
    AnswerSet,
    answer_chunks,
    row_chunks,
    row_cross_entropy,
    vocab_size,
)
from surgeon.tokens import encode


def accumulate_sign_guard_grad(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    token_ids: Sequence[int],
    signs: Tensor,
    batch_size: int,
    weight: float,
) -> float:
    """Backpropagate ``weight * mean(softplus(signs * refusal log-odds))`` over formatted
    guard prompts (``signs``: +1 where the base answers, -1 where it refuses).

    Gradients add up in ``.grad`` (the caller zeroes them); returns the unweighted loss.
    """
    device = model_device(model)
    n = len(texts)
    total = 0.0
    for rows in row_chunks(n, batch_size):
        enc = encode(tokenizer, [texts[i] for i in rows], device)
        logits = model(**enc, use_cache=False, **forward_kwargs(model)).logits[:, -1, :]
        odds = refusal_log_odds(logits, token_ids)
        loss = torch.nn.functional.softplus(signs[rows.start : rows.stop].to(device) * odds)
        loss = loss.sum() / n
        (weight * loss).backward()
        total += float(loss.detach())
    return total


def reference_losses(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    answers: AnswerSet,
    batch_size: int,
    first_token_share: float,
) -> Tensor:
    """Per-answer cross-entropy of the guard answers under ``model`` as it is now (no grad)."""
    with torch.no_grad():
        rows = [
            row_cross_entropy(model, tokenizer, answers, r, first_token_share)
            for r in answer_chunks(answers, batch_size, vocab_size(model))
        ]
    return torch.cat(rows).detach().cpu()


def accumulate_hinge_guard_grad(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    answers: AnswerSet,
    reference: Tensor,
    batch_size: int,
    first_token_share: float,
    weight: float,
    slack: float,
) -> float:
    """Backpropagate ``weight * mean(relu(CE_W - reference - slack))`` over the guard answers.

    Gradients add up in ``.grad`` (the caller zeroes them); returns the unweighted loss.
    """
    n = len(answers.answer_ids)
    total = 0.0
    for rows in answer_chunks(answers, batch_size, vocab_size(model)):
        loss = row_cross_entropy(model, tokenizer, answers, rows, first_token_share)
        ref = reference[rows.start : rows.stop].to(loss.device)
        hinge = torch.relu(loss - ref - slack).sum() / n
        if hinge.requires_grad:
            (weight * hinge).backward()
        total += float(hinge.detach())
    return total
