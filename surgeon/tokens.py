"""Batched, left-padded tokenisation of formatted prompts, with position ids and truncation.

:func:`encode` pads on the left itself (whatever the tokenizer's ``padding_side``), so the last
positions of every row are real tokens, and returns ``position_ids`` counted from each row's
first real token: a left-padded row then sees the same positions as the same prompt alone,
which absolute-position models (GPT-2) need and rotary ones are unaffected by. A prompt longer
than the limit (the model's context, see :func:`context_length`) keeps its last tokens, so
the assistant header survives; each truncation is logged as a warning and counted by the
:func:`track_truncation` block around it. The tokenizer passed in is never modified.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from surgeon.chat import has_chat_template

log = logging.getLogger("surgeon")

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
)
"""The files a tokenizer may be saved as (read by loading, copied verbatim by saving)."""
NO_LIMIT = 10**29
"""``model_max_length`` at or above this is transformers' "no limit" placeholder (1e30)."""
CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "max_sequence_length",
    "seq_length",
)
"""Config attributes that give a model's context length, in order of preference."""


@dataclass
class TruncationLog:
    """Prompts cut from the left to fit the model's context during a :func:`track_truncation`
    block, each counted once however often it is encoded."""

    digests: set[str] = field(default_factory=set)
    """SHA-256 of each distinct truncated prompt text."""
    longest: int = 0
    """Token count of the longest truncated prompt before truncation."""
    limit: int | None = None
    """The smallest token limit a prompt was cut to."""

    @property
    def count(self) -> int:
        """Number of distinct prompts that were truncated."""
        return len(self.digests)

    def warnings(self) -> list[str]:
        """The report's warning about the truncated prompts (none when nothing was cut)."""
        if not self.count:
            return []
        return [
            f"{self.count} prompt(s) longer than the model's context ({self.limit} tokens, the "
            f"longest {self.longest}) were cut from the left: their start was not seen"
        ]


_ACTIVE: ContextVar[TruncationLog | None] = ContextVar("surgeon_truncation", default=None)


@contextmanager
def track_truncation() -> Iterator[TruncationLog]:
    """Count the prompts truncated by :func:`encode` inside the block (nested blocks each
    count their own; the outer one sees none of the inner's)."""
    record = TruncationLog()
    token = _ACTIVE.set(record)
    try:
        yield record
    finally:
        _ACTIVE.reset(token)


def context_length(config: Any) -> int | None:
    """The number of positions a model accepts, from its config (a nested ``text_config``
    included); None when the config names none."""
    for cfg in (config, getattr(config, "text_config", None)):
        if cfg is None:
            continue
        for key in CONTEXT_KEYS:
            value = getattr(cfg, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def tokenizer_limit(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The tokenizer's ``model_max_length`` when it is a real limit (not the 1e30 placeholder)."""
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < NO_LIMIT:
        return value
    return None


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for padding: the pad token, else end-of-sequence, else unknown, else 0."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if isinstance(value, int):
            return value
    return 0


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A left-padding tokenizer with a pad token: ``tokenizer`` itself when it already is one,
    else a copy (the argument is never modified)."""
    if tokenizer.padding_side == "left" and tokenizer.pad_token is not None:
        return tokenizer
    out = copy.deepcopy(tokenizer)
    out.padding_side = "left"
    if out.pad_token is None:
        out.pad_token = out.eos_token or out.unk_token
    return out


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (0 on padding), as
    ``model.generate`` computes them: a left-padded row sees the positions it would alone."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp(min=0) * mask


def _note_truncated(texts: Sequence[str], lengths: Sequence[int], limit: int) -> None:
    cut = [(t, n) for t, n in zip(texts, lengths, strict=True) if n > limit]
    if not cut:
        return
    record = _ACTIVE.get()
    if record is not None:
        new = {hashlib.sha256(t.encode("utf-8")).hexdigest() for t, _ in cut}
        new -= record.digests
        record.digests |= new
        record.longest = max(record.longest, *(n for _, n in cut))
        record.limit = limit if record.limit is None else min(record.limit, limit)
        if not new:
            return
        fresh = len(new)
    else:
        fresh = len(cut)
    log.warning(
        "surgeon: warning: %d prompt(s) longer than %d tokens (up to %d) truncated from the "
        "left to fit the model's context",
        fresh,
        limit,
        max(n for _, n in cut),
    )


def encode(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    device: torch.device | str = "cpu",
    *,
    max_length: int | None = None,
) -> BatchEncoding:
    """Tokenise formatted prompts, left-padded, with ``input_ids``, ``attention_mask`` and
    ``position_ids`` (see the module docstring).

    Chat templates already contain their special tokens (BOS and headers), so none are added;
    the plain fallback gets the tokenizer's usual special tokens. ``max_length``: keep at most
    that many tokens per prompt, the last ones (default: the tokenizer's ``model_max_length``
    when it is a real limit; :func:`surgeon.loading.load_model` sets it to the model's context).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("encode needs at least one text")
    limit = max_length if max_length is not None else tokenizer_limit(tokenizer)
    if limit is not None and limit < 1:
        raise ValueError(f"max_length must be >= 1, got {limit}")
    ids: list[list[int]] = tokenizer(
        texts, add_special_tokens=not has_chat_template(tokenizer), verbose=False
    )["input_ids"]
    if limit is not None:
        _note_truncated(texts, [len(row) for row in ids], limit)
        ids = [row[-limit:] if len(row) > limit else row for row in ids]
    width = max(len(row) for row in ids)
    pad = pad_token_id(tokenizer)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, row in enumerate(ids):
        if row:
            input_ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[r, width - len(row) :] = 1
    enc = BatchEncoding(
        {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids_for(attention_mask),
        }
    )
    return enc.to(device)
