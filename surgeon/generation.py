"""Batched greedy generation, deterministic for a given seed.

Prompts are left-padded with their own ``position_ids`` (:func:`surgeon.tokens.encode`), which
``model.generate`` extends by one per new token, so a batched prompt is continued exactly as it
would be alone, for absolute-position models too. A prompt is cut from the left so that it and
the new tokens fit the model's context.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from surgeon.errors import InputError
from surgeon.progress import progress
from surgeon.tokens import context_length, encode, pad_token_id, tokenizer_limit


def forward_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """Extra forward arguments that skip work a next-token pass does not need: the vocabulary
    projection of every position but the last (``logits_to_keep=1``; on a 49k vocabulary a
    fifth of a small model's forward), where the model's own forward takes it (a PEFT wrapper,
    whose forward takes ``**kwargs``, keeps every position)."""
    params = inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (the input device under a device map)."""
    return next(model.parameters()).device


def prompt_limit(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int
) -> int | None:
    """The most prompt tokens that leave room for ``max_new_tokens`` in the model's context
    (None when neither the model's config nor the tokenizer names a context).

    Raises :class:`InputError` when ``max_new_tokens`` alone fills the context.
    """
    limits = [
        n
        for n in (context_length(getattr(model, "config", None)), tokenizer_limit(tokenizer))
        if n is not None
    ]
    if not limits:
        return None
    context = min(limits)
    if max_new_tokens >= context:
        raise InputError(
            f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's "
            f"context of {context} tokens"
        )
    return context - max_new_tokens


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    seed: int = 0,
    desc: str = "generating",
) -> list[str]:
    """Greedy continuations of already formatted prompts, decoded without special tokens."""
    torch.manual_seed(seed)
    device = model_device(model)
    limit = prompt_limit(model, tokenizer, max_new_tokens)
    out: list[str] = []
    batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    was_training = model.training
    model.eval()
    try:
        for batch in progress(batches, desc=desc):
            enc = encode(tokenizer, batch, device, max_length=limit)
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_token_id(tokenizer),
                eos_token_id=tokenizer.eos_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return [s.strip() for s in out]
