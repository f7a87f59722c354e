"""How the direction probe's causal check reads refusal without generating: a log-odds that no
single shared token can fool.

Arditi et al. score refusal by the probability of a refusal phrase's first token at the first
answer position. In a vocabulary where that token also starts helpful answers (``S`` of
"Sorry" and "Sure" in a small byte-level BPE, ``I`` of "I'm sorry" and "I can help" in
SmolLM2's), that score counts compliance as refusal. Here each refusal first token that one of
the model's own non-refusing answers also starts with (*ambiguous*) is replaced by the whole
phrases it begins: their teacher-forced probability ``p(t_1) p(t_2 | t_1) ...`` enters the
refusal mass instead of ``p(t_1)``. Unambiguous first tokens keep the one-position score, so a
model whose answers share no first token with a refusal gets exactly the first-token log-odds.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from probes.activations import forward_kwargs
from surgeon.generation import model_device
from surgeon.judges.logit import DEFAULT_FIRST_TOKEN_PHRASES, refusal_token_ids, text_token_ids
from surgeon.tokens import encode

ScoreMode = Literal["auto", "first-token", "phrase"]
"""``auto``: extend only ambiguous first tokens; ``first-token``: never; ``phrase``: always."""


def answer_first_tokens(
    tokenizer: PreTrainedTokenizerBase, responses: Sequence[str], refused: Sequence[bool]
) -> set[int]:
    """First token ids (with and without a leading space) of the answers that do not refuse."""
    out: set[int] = set()
    for text, r in zip(responses, refused, strict=True):
        if not r and text.strip():
            out.update(ids[0] for ids in text_token_ids(tokenizer, text.strip()))
    return out


def _prefix_free(seqs: Iterable[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    """Distinct sequences, dropping any that extends a shorter one (its mass is counted)."""
    uniq = sorted(set(seqs), key=lambda s: (len(s), s))
    kept: list[tuple[int, ...]] = []
    for s in uniq:
        if not any(s[: len(k)] == k for k in kept):
            kept.append(s)
    return tuple(kept)


@dataclass(frozen=True)
class RefusalScore:
    """Which tokens and phrases count as the start of a refusal."""

    first_tokens: tuple[int, ...]
    """Refusal first tokens scored at the first answer position alone."""
    sequences: tuple[tuple[int, ...], ...]
    """Whole refusal phrases (token ids) scored by teacher forcing: those whose first token is
    ambiguous."""
    ambiguous: tuple[str, ...]
    """The refusal first tokens that also start a non-refusing answer (decoded)."""

    @property
    def name(self) -> str:
        """``first-token`` when no phrase is extended, else ``phrase``."""
        return "phrase" if self.sequences else "first-token"

    def log_odds(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        batch_size: int,
    ) -> Tensor:
        """Refusal log-odds after each formatted prompt (float32, CPU)."""
        return self.log_odds_and_logits(model, tokenizer, texts, batch_size)[0]

    @torch.no_grad()
    def log_odds_and_logits(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        batch_size: int,
    ) -> tuple[Tensor, Tensor]:
        """Refusal log-odds and the next-token logits after each formatted prompt (float32,
        CPU), from the same forward passes."""
        device = model_device(model)
        extra = forward_kwargs(model)
        multi = [s for s in self.sequences if len(s) > 1]
        out, last = [], []
        for i in range(0, len(texts), batch_size):
            enc = encode(tokenizer, list(texts[i : i + batch_size]), device)
            res = model(**enc, use_cache=bool(multi), **extra)
            last.append(res.logits[:, -1, :].float().cpu())
            logp = torch.log_softmax(last[-1], dim=-1)
            parts = [logp[:, list(self.first_tokens)]] if self.first_tokens else []
            parts += [logp[:, [s[0] for s in self.sequences if len(s) == 1]]]
            if multi:
                cache = getattr(res, "cache", None) or res.past_key_values
                parts.append(_continuations(model, enc, cache, multi, logp))
            lp = torch.logsumexp(torch.cat(parts, dim=1), dim=1)
            out.append(lp - torch.log1p(-lp.exp().clamp(max=1 - 1e-6)))
        return torch.cat(out), torch.cat(last)


def _continuations(
    model: PreTrainedModel,
    enc: dict[str, Tensor],
    cache: Any,
    seqs: Sequence[tuple[int, ...]],
    first: Tensor,
) -> Tensor:
    """``[n, len(seqs)]``: ``log p(seq | prompt)``, teacher-forced on the prompts' cache.

    Each prompt's cache is repeated once per phrase, and the phrases' tokens but the last
    (right-padded, masked) run after it in one forward pass."""
    n, k = enc["input_ids"].shape[0], len(seqs)
    device = enc["input_ids"].device
    width = max(len(s) for s in seqs) - 1
    tail = torch.zeros((k, width), dtype=torch.long)
    tail_mask = torch.zeros((k, width), dtype=torch.long)
    target = torch.zeros((k, width), dtype=torch.long)
    for j, s in enumerate(seqs):
        tail[j, : len(s) - 1] = torch.tensor(s[:-1])
        target[j, : len(s) - 1] = torch.tensor(s[1:])
        tail_mask[j, : len(s) - 1] = 1
    cache.batch_repeat_interleave(k)
    rows = lambda t: t.repeat(n, 1)  # noqa: E731  row i * k + j: prompt i, phrase j
    inputs: dict[str, Any] = {
        "input_ids": rows(tail).to(device),
        "attention_mask": torch.cat(
            [enc["attention_mask"].repeat_interleave(k, 0), rows(tail_mask).to(device)], dim=1
        ),
    }
    if "position_ids" in enc:
        last = enc["position_ids"][:, -1:].repeat_interleave(k, 0)
        inputs["position_ids"] = last + torch.arange(1, width + 1, device=device).unsqueeze(0)
    params = inspect.signature(model.forward).parameters
    inputs["cache" if "cache" in params else "past_key_values"] = cache
    logits = model(**inputs, use_cache=True).logits
    logp = torch.log_softmax(logits.float(), dim=-1).cpu()
    picked = logp.gather(-1, rows(target).unsqueeze(-1)).squeeze(-1) * rows(tail_mask)
    lead = first[:, [s[0] for s in seqs]]
    return lead + picked.sum(-1).view(n, k)


def refusal_score(
    tokenizer: PreTrainedTokenizerBase,
    ambiguous: Iterable[int] = (),
    mode: ScoreMode = "auto",
    phrases: Sequence[str] = DEFAULT_FIRST_TOKEN_PHRASES,
) -> RefusalScore:
    """The score for ``tokenizer`` given the token ids that start non-refusing answers."""
    firsts = refusal_token_ids(tokenizer, phrases)
    shared = set(ambiguous) if mode == "auto" else set(firsts) if mode == "phrase" else set()
    extend = [t for t in firsts if t in shared]
    seqs = _prefix_free(
        tuple(ids)
        for phrase in phrases
        for ids in text_token_ids(tokenizer, phrase)
        if ids[0] in extend
    )
    return RefusalScore(
        first_tokens=tuple(t for t in firsts if t not in shared),
        sequences=seqs,
        ambiguous=tuple(tokenizer.convert_ids_to_tokens(extend)) if mode == "auto" else (),
    )
