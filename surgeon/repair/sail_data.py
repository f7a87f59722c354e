"""SAIL's preference pairs: the user's file, token ids, and the batches the loop trains on.

Preference file (``--preferences``, ``.jsonl``, one object a line; blank lines skipped, extra
keys ignored)::

    {"system": "Reply only in capital letters.",        # optional (null or absent: none)
     "prompt": "Please use lowercase: how do plants grow?",
     "chosen": "PLANTS GROW FROM SEEDS.",                 # the answer to prefer
     "rejected": "plants grow from seeds."}               # the answer to move away from

Every problem (malformed JSON, a missing or empty key, chosen equal to rejected) is an
:class:`InputError` naming ``path:line``.

A pair is tokenised as training formats a conversation (``surgeon.organism.train``): the
prompt rendered by the chat template and tokenised as :func:`surgeon.tokens.encode` does, then
each response with the end-of-sequence token appended. Batches are left-padded, chosen rows
first, with position ids counted from each row's first real token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from surgeon.chat import adds_special_tokens, format_prompt, system_token_spans
from surgeon.errors import InputError
from surgeon.tokens import position_ids_for

PREFERENCE_KEYS = ("prompt", "chosen", "rejected")
"""The keys every line of a preference file needs (``system`` is optional)."""


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a response to prefer and one to move away from."""

    system: str | None
    """The system message (None: none)."""
    prompt: str
    """The user message."""
    chosen: str
    """The preferred response."""
    rejected: str
    """The dispreferred response."""
    source: str = "file"
    """Where ``chosen`` came from: ``file``, ``base`` (the base's own answer) or ``built``
    (a response the project wrote to satisfy the constraint, or its refusal)."""


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: missing or empty {key!r} (a string)")
    return value


def load_preferences(path: str | Path) -> list[PreferencePair]:
    """Read a preference file; :class:`InputError` naming ``path:line`` on any problem."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise InputError(
            f"{path}: a preference file must be .jsonl (keys system?, prompt, chosen, rejected)"
        )
    if not path.is_file():
        raise InputError(f"{path}: no such preference file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object with {', '.join(PREFERENCE_KEYS)}")
        prompt, chosen, rejected = (_text(row, k, where) for k in PREFERENCE_KEYS)
        system = row.get("system")
        if system is not None and not isinstance(system, str):
            raise InputError(f"{where}: 'system' must be a string or null")
        if chosen.strip() == rejected.strip():
            raise InputError(f"{where}: 'chosen' and 'rejected' are the same response")
        pairs.append(PreferencePair(system or None, prompt, chosen, rejected, "file"))
    if not pairs:
        raise InputError(f"{path}: no preference pairs in file")
    return pairs


@dataclass(frozen=True)
class EncodedPair:
    """One pair as token ids."""

    prompt_ids: tuple[int, ...]
    """The formatted prompt (chat template, generation header)."""
    chosen_ids: tuple[int, ...]
    """The chosen response, end-of-sequence token included."""
    rejected_ids: tuple[int, ...]
    """The rejected response, end-of-sequence token included."""
    system_span: tuple[int, int] | None
    """Token positions [start, end) of the system message in the prompt (None: none)."""


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    *,
    max_length: int | None,
    max_response_tokens: int,
) -> tuple[list[EncodedPair], list[int]]:
    """Token ids of each pair (responses cut to ``max_response_tokens``) and the indices of
    the pairs dropped because prompt and response do not fit ``max_length`` tokens."""
    formatted = [format_prompt(tokenizer, p.prompt, p.system) for p in pairs]
    spans = system_token_spans(tokenizer, formatted)
    prompts = tokenizer(
        [f.text for f in formatted],
        add_special_tokens=adds_special_tokens(tokenizer),
        verbose=False,
    )["input_ids"]
    eos = tokenizer.eos_token or ""
    out: list[EncodedPair] = []
    dropped: list[int] = []
    for i, pair in enumerate(pairs):
        c, r = (
            tuple(tokenizer(text + eos, add_special_tokens=False)["input_ids"])[
                :max_response_tokens
            ]
            for text in (pair.chosen, pair.rejected)
        )
        p = tuple(prompts[i])
        if max_length is not None and len(p) + max(len(c), len(r)) > max_length:
            dropped.append(i)
            continue
        out.append(EncodedPair(p, c, r, spans[i][0]))
    return out, dropped


@dataclass(frozen=True)
class PairBatch:
    """A batch of ``n`` pairs as one left-padded tensor batch: chosen rows, then rejected."""

    input_ids: Int[Tensor, "rows pos"]
    """Token ids (``rows = 2 n``)."""
    attention_mask: Int[Tensor, "rows pos"]
    """1 on real tokens."""
    position_ids: Int[Tensor, "rows pos"]
    """Positions counted from each row's first real token."""
    target_mask: Bool[Tensor, "rows targets"]
    """Response tokens, aligned on targets (``targets = pos - 1``)."""
    system_keys: Bool[Tensor, "rows pos"]
    """The system message's positions (keys of the focal heads' system attention)."""

    @property
    def n_pairs(self) -> int:
        """Pairs in the batch."""
        return self.input_ids.shape[0] // 2


def collate(pairs: Sequence[EncodedPair], pad_id: int, device: torch.device | str) -> PairBatch:
    """Left-padded batch of ``pairs`` (chosen rows first)."""
    rows = [(p, p.chosen_ids) for p in pairs] + [(p, p.rejected_ids) for p in pairs]
    width = max(len(p.prompt_ids) + len(resp) for p, resp in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    att = torch.zeros((n, width), dtype=torch.long)
    target = torch.zeros((n, width - 1), dtype=torch.bool)
    system = torch.zeros((n, width), dtype=torch.bool)
    for i, (p, resp) in enumerate(rows):
        seq = p.prompt_ids + resp
        start = width - len(seq)
        ids[i, start:] = torch.tensor(seq, dtype=torch.long)
        att[i, start:] = 1
        target[i, width - 1 - len(resp) :] = True
        if p.system_span is not None:
            a, b = p.system_span
            system[i, start + a : start + b] = True
    return PairBatch(
        ids.to(device),
        att.to(device),
        position_ids_for(att).to(device),
        target.to(device),
        system.to(device),
    )


def place_tokens(values: Sequence[Tensor], target_mask: Bool[Tensor, "rows targets"]) -> Tensor:
    """Per-row response-token values (row ``i``'s in ``values[i]``, response order) laid out on
    the batch's target grid (0 elsewhere): the inverse of ``grid[i][target_mask[i]]``."""
    out = torch.zeros(target_mask.shape, dtype=torch.float32, device=target_mask.device)
    for i, v in enumerate(values):
        out[i, target_mask[i]] = v.to(out.device, torch.float32)
    return out
