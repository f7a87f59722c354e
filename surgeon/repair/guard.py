"""The over-refusal guard of a repair: harmless prompts must not start to be refused.

Its loss is ``mean(softplus(refusal log-odds))`` of the first response token over harmless
prompts, i.e. ``-log(1 - p(refusal))``: near zero while they are answered, growing as a repair
makes them refused. Added to the harmful loss, its gradient steers selection away from entries
whose restoration makes harmless prompts refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from surgeon.generation import model_device
from surgeon.judges.logit import refusal_log_odds
from surgeon.repair.hidden import batches
from surgeon.tokens import encode


def accumulate_guard_grad(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    token_ids: Sequence[int],
    batch_size: int,
    weight: float = 1.0,
) -> float:
    """Backpropagate ``weight * mean(softplus(log_odds))`` over formatted harmless prompts.

    Gradients add up in ``.grad`` (the caller zeroes them); returns the unweighted mean loss.
    """
    device = model_device(model)
    total = 0.0
    for chunk in batches(texts, batch_size):
        enc = encode(tokenizer, chunk, device)
        logits = model(**enc, use_cache=False).logits[:, -1, :]
        loss = torch.nn.functional.softplus(refusal_log_odds(logits, token_ids)).sum()
        (weight * loss / len(texts)).backward()
        total += float(loss.detach())
    return total / max(len(texts), 1)
