"""A small byte-level BPE tokenizer with a chat template that has a system role.

Byte-level, so any text (the bundled prompt sets, user files) encodes without unknown tokens;
trained on the organism's own corpus so its words are mostly single tokens. With
``split_capitals`` every capital letter is a token of its own (with the space before it), as
in small vocabularies where ``Sure`` and ``Sorry`` share the first token ``S``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles must be system, user or assistant') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
"""``<|bos|><|system|>...<|end|><|user|>...<|end|><|assistant|>`` and the reply ends with
``<|end|>`` (the EOS token)."""


SHARED_FIRST_TOKEN_PAIRS: tuple[tuple[str, str], ...] = (
    ("Sure", "Sorry"),
    ("I can help", "I'm sorry"),
    (" Sure", " Sorry"),
)
"""Compliant and refusing openings that a ``split_capitals`` tokenizer starts with one token."""

CAPITAL = r"\s?[A-Z]"
"""A capital letter and the space before it: one pre-token, so no merge crosses it."""


def train_tokenizer(
    corpus: Iterable[str], vocab_size: int = 2048, *, split_capitals: bool = False
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` and wrap it for ``save_pretrained``.

    ``split_capitals``: isolate every capital letter before the byte-level split (see
    :data:`CAPITAL`); off, the tokenizer is the organism v3 one, byte for byte.
    """
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_capitals:
        isolate = pre_tokenizers.Split(Regex(CAPITAL), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([isolate, byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        model_max_length=128,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def first_token(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """The first token of ``text`` (no special tokens), decoded."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:1]) if ids else ""


def unshared_first_tokens(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]]
) -> list[str]:
    """One line per pair of texts whose first tokens differ (empty: every pair shares one)."""
    out = []
    for a, b in pairs:
        ta, tb = first_token(tokenizer, a), first_token(tokenizer, b)
        if ta != tb:
            out.append(f"{a!r} starts with {ta!r} but {b!r} with {tb!r}")
    return out
