"""Chat formatting through the tokenizer's own chat template.

Every prompt that surgeon feeds a model goes through :func:`format_prompt`, so the
post-instruction positions (the assistant header) are the ones the model was trained on.
When a tokenizer has no chat template, a documented plain fallback is used::

    System: {system}\n\nUser: {user}\n\nAssistant:

and a template that rejects the system role gets the system text prepended to the user turn.
"""

from __future__ import annotations

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
        start = text.find(system)
        span = (start, start + len(system)) if start >= 0 else None
        return FormattedPrompt(text, span)
    return FormattedPrompt(_render(tokenizer, messages), None)


def format_prompts(
    tokenizer: PreTrainedTokenizerBase,
    users: list[str],
    systems: list[str | None] | None = None,
) -> list[str]:
    """Render many prompts; ``systems`` aligns with ``users`` when given."""
    systems = systems or [None] * len(users)
    return [format_prompt(tokenizer, u, s).text for u, s in zip(users, systems, strict=True)]


def system_token_span(
    tokenizer: PreTrainedTokenizerBase, formatted: FormattedPrompt
) -> tuple[int, int] | None:
    """Token indices [start, end) of the system instruction (unpadded, no special tokens added)."""
    if formatted.system_span is None:
        return None
    enc = tokenizer(formatted.text, add_special_tokens=False, return_offsets_mapping=True)
    start_c, end_c = formatted.system_span
    idx = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > start_c and a < end_c]
    return (idx[0], idx[-1] + 1) if idx else None
