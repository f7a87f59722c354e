"""Batched greedy generation, deterministic for a given seed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from surgeon.progress import progress
from surgeon.tokens import encode, prepare_tokenizer


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (the input device under a device map)."""
    return next(model.parameters()).device


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
    prepare_tokenizer(tokenizer)
    device = model_device(model)
    out: list[str] = []
    batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    was_training = model.training
    model.eval()
    try:
        for batch in progress(batches, desc=desc):
            enc = encode(tokenizer, batch, device)
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return [s.strip() for s in out]
