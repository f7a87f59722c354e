"""Batched, left-padded tokenisation of formatted prompts."""

from __future__ import annotations

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from surgeon.chat import has_chat_template


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding and a pad token: a right-padded batch reads pad positions as the last token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], device: torch.device | str = "cpu"
) -> BatchEncoding:
    """Tokenise formatted prompts, left-padded.

    Chat templates already contain their special tokens (BOS and headers), so none are added;
    the plain fallback gets the tokenizer's usual special tokens.
    """
    prepare_tokenizer(tokenizer)
    enc = tokenizer(
        texts,
        return_tensors="pt",
        padding=True,
        add_special_tokens=not has_chat_template(tokenizer),
    )
    return enc.to(device)
