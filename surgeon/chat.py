"""Chat formatting through the tokenizer's own chat template.

Every prompt that surgeon feeds a model goes through :func:`format_prompt`, so the
post-instruction positions (the assistant header) are the ones the model was trained on.
When a tokenizer has no chat template, a documented plain fallback is used::

    System: {system}\n\nUser: {user}\n\nAssistant:

and a template that rejects the system role gets the system text prepended to the user turn.

The system instruction is located in tokens from the tokenizer's offset mapping over the
rendered text (:func:`system_token_span`), never from a per-template mask, so the same code
serves every chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

PLAIN_SYSTEM = "System: {system}\n\n"
PLAIN_USER = "User: {user}\n\nAssistant:"


@dataclass(frozen=True)
class FormattedPrompt:
    """A prompt rendered for the model, with the character span of the system text."""

    text: str
    """The full text, ending with the assistant header (generation prompt)."""
    system_span: tuple[int, int] | None
    """Character offsets [start, end) of the system instruction in ``text``; None without one."""


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert isinstance(text, str)
    return text


def _find(text: str, system: str) -> tuple[int, int] | None:
    """Character span of the system text in the rendered prompt (templates may strip it)."""
    for needle in (system, system.strip()):
        start = text.find(needle) if needle else -1
        if start >= 0:
            return start, start + len(needle)
    return None


def format_prompt(
    tokenizer: PreTrainedTokenizerBase, user: str, system: str | None = None
) -> FormattedPrompt:
    """Render one user turn (and optional system message) ready for the assistant's reply."""
    if not has_chat_template(tokenizer):
        prefix = PLAIN_SYSTEM.format(system=system) if system else ""
        text = prefix + PLAIN_USER.format(user=user)
        span = (len("System: "), len("System: ") + len(system)) if system else None
        return FormattedPrompt(text, span)
    messages = [{"role": "user", "content": user}]
    if system:
        try:
            text = _render(tokenizer, [{"role": "system", "content": system}, *messages])
        except Exception:
            text = _render(tokenizer, [{"role": "user", "content": f"{system}\n\n{user}"}])
        return FormattedPrompt(text, _find(text, system))
    return FormattedPrompt(_render(tokenizer, messages), None)


def format_prompts(
    tokenizer: PreTrainedTokenizerBase,
    users: list[str],
    systems: list[str | None] | None = None,
) -> list[str]:
    """Render many prompts; ``systems`` aligns with ``users`` when given."""
    systems = systems or [None] * len(users)
    return [format_prompt(tokenizer, u, s).text for u, s in zip(users, systems, strict=True)]


def adds_special_tokens(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether prompts are tokenised with the tokenizer's own special tokens (BOS...).

    Chat templates already render theirs, so only the plain fallback adds them; this is the
    rule :func:`surgeon.tokens.encode` follows, and token positions must agree with it.
    """
    return not has_chat_template(tokenizer)


def _span_from_offsets(
    offsets: Sequence[tuple[int, int]], span: tuple[int, int]
) -> tuple[int, int] | None:
    start_c, end_c = span
    idx = [
        i
        for i, (a, b) in enumerate(offsets)
        if b > start_c and a < end_c and a != b  # added specials have empty offsets
    ]
    return (idx[0], idx[-1] + 1) if idx else None


def _span_by_prefixes(
    tokenizer: PreTrainedTokenizerBase, formatted: FormattedPrompt, special: bool
) -> tuple[int, int] | None:
    """Slow tokenizers (no offsets): token counts of the text before and through the span."""
    assert formatted.system_span is not None
    start_c, end_c = formatted.system_span
    n_before = len(tokenizer(formatted.text[:start_c], add_special_tokens=False)["input_ids"])
    n_through = len(tokenizer(formatted.text[:end_c], add_special_tokens=False)["input_ids"])
    if n_through <= n_before:
        return None
    if special:  # shift by the specials the tokenizer prepends (BOS)
        full = tokenizer(formatted.text, add_special_tokens=True)["input_ids"]
        bare = tokenizer(formatted.text, add_special_tokens=False)["input_ids"]
        offset = next(
            (i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), 0
        )
        n_before, n_through = n_before + offset, n_through + offset
    return n_before, n_through


def system_token_spans(
    tokenizer: PreTrainedTokenizerBase,
    formatted: Sequence[FormattedPrompt],
    add_special_tokens: bool | None = None,
) -> list[tuple[tuple[int, int] | None, int]]:
    """For each prompt, the system span in tokens (see :func:`system_token_span`) and the
    prompt's token count, from one batched tokenisation."""
    special = adds_special_tokens(tokenizer) if add_special_tokens is None else add_special_tokens
    texts = [f.text for f in formatted]
    if not texts:
        return []
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(texts, add_special_tokens=special, return_offsets_mapping=fast)
    out: list[tuple[tuple[int, int] | None, int]] = []
    for i, f in enumerate(formatted):
        n_tokens = len(enc["input_ids"][i])
        if f.system_span is None:
            out.append((None, n_tokens))
        elif fast:
            out.append((_span_from_offsets(enc["offset_mapping"][i], f.system_span), n_tokens))
        else:
            out.append((_span_by_prefixes(tokenizer, f, special), n_tokens))
    return out


def system_token_span(
    tokenizer: PreTrainedTokenizerBase,
    formatted: FormattedPrompt,
    add_special_tokens: bool | None = None,
) -> tuple[int, int] | None:
    """Token indices [start, end) of the system instruction in the unpadded prompt.

    Indices count the special tokens the tokenizer adds (``add_special_tokens``; by default
    :func:`adds_special_tokens`, the rule of batched encoding), so a BOS the tokenizer prepends
    shifts the span as it shifts the prompt. A token counts when its characters overlap the
    system text (a BPE token carrying the space before it is included). Fast tokenizers use
    their offset mapping; slow ones the token counts of the text before and through the span.
    None without a system span or when no token covers it.
    """
    return system_token_spans(tokenizer, [formatted], add_special_tokens)[0][0]
