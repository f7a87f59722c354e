"""Which refusal proxy a repair may trust: each candidate measured against the full generation
judge, on the base and on the model, before the loop starts.

A proxy is trusted when its refusal rate is within ``tolerance`` (10 points) of the judge's on
both models. ``auto`` takes the cheapest trusted one (first-token, then k-token generation);
when none is trusted it takes the closest and says so. Evidence is gathered one model at a
time (:func:`model_evidence`), so the base can be freed before the model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from surgeon.judges import KeywordJudge
from surgeon.judges.logit import refusal_token_ids
from surgeon.judges.proxy import (
    FirstTokenProxy,
    GenerationProxy,
    RefusalProxy,
    first_token_probs,
    refused_from_probs,
)
from surgeon.repair.task_metric import AnswerSet

PROXIES = ("first-token", "generation")
"""The proxies, cheapest first (the order ``auto`` tries them in)."""


@dataclass(frozen=True)
class Evidence:
    """One model's answers to one prompt set, read three ways."""

    judged: Tensor
    """Per prompt: the full greedy answer is a refusal (keyword judge)."""
    probs: Tensor
    """``[n_prompts, n_candidates]``: first-token probability of each candidate refusal token."""
    prefix: Tensor
    """Per prompt: the answer's first ``k`` tokens read as a refusal (the generation proxy)."""
    first_tokens: tuple[int, ...]
    """The first token of every answer that is not a refusal."""

    def refused(self, proxy: str, keep: Tensor) -> Tensor:
        """The proxy's refusal flags (``keep``: the counted first-token candidates)."""
        return refused_from_probs(self.probs, keep) if proxy == "first-token" else self.prefix

    def harmful_rate(self, proxy: str, keep: Tensor) -> float:
        """Share not refused by the proxy."""
        flags = self.refused(proxy, keep)
        return 1.0 - float(flags.float().mean()) if len(flags) else 0.0

    @property
    def judged_harmful(self) -> float:
        """Share not refused by the judge."""
        return 1.0 - float(self.judged.float().mean()) if len(self.judged) else 0.0


def _decode(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True).strip()


def model_evidence(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    answers: AnswerSet,
    k: int,
    batch_size: int,
) -> Evidence:
    """What ``model`` does on formatted ``texts``, given its own greedy ``answers`` to them."""
    judge = KeywordJudge()
    full = [_decode(tokenizer, a) for a in answers.answer_ids]
    head = [_decode(tokenizer, a[:k]) for a in answers.answer_ids]
    judged = judge.refused(list(texts), full)
    candidates = refusal_token_ids(tokenizer)
    return Evidence(
        judged=torch.tensor(judged, dtype=torch.bool),
        probs=first_token_probs(model, tokenizer, texts, candidates, batch_size),
        prefix=torch.tensor(judge.refused(list(texts), head), dtype=torch.bool),
        first_tokens=tuple(
            a[0] for a, r in zip(answers.answer_ids, judged, strict=True) if a and not r
        ),
    )


@dataclass(frozen=True)
class Candidate:
    """How one proxy agreed with the judge."""

    name: str
    """``first-token`` or ``generation``."""
    rate_base: float
    """The proxy's harmful rate (not refused) on the base."""
    judge_base: float
    """The judge's, on the base."""
    agreement_base: float
    """Share of prompts where proxy and judge agree, on the base."""
    rate_model: float
    """The proxy's harmful rate on the model."""
    judge_model: float
    """The judge's, on the model."""
    agreement_model: float
    """Share of prompts where they agree, on the model."""
    trusted: bool
    """Both rates within the tolerance of the judge's."""

    @property
    def error(self) -> float:
        """The larger of the two rate differences."""
        return max(abs(self.rate_base - self.judge_base), abs(self.rate_model - self.judge_model))


@dataclass(frozen=True)
class ProxyChoice:
    """The proxy a repair uses and why."""

    name: str
    """The chosen proxy."""
    candidates: tuple[Candidate, ...]
    """Every proxy measured."""
    excluded_tokens: tuple[str, ...]
    """Refusal tokens dropped from the first-token proxy (they also start helpful answers)."""
    keep: Tensor
    """The counted first-token candidates."""
    k: int
    """Tokens of the generation proxy."""
    warning: str | None
    """Set when no proxy was trusted (or a forced one was not)."""

    @property
    def chosen(self) -> Candidate:
        """The chosen proxy's figures."""
        return next(c for c in self.candidates if c.name == self.name)


def _agreement(flags: Tensor, judged: Tensor) -> float:
    return float((flags == judged).float().mean()) if len(judged) else 1.0


def calibrate(
    tokenizer: PreTrainedTokenizerBase,
    base: Evidence,
    model: Evidence,
    helpful_first: Sequence[int],
    *,
    requested: str = "auto",
    tolerance: float = 0.10,
    k: int = 8,
) -> ProxyChoice:
    """Measure every proxy on both models' recovery prompts and choose one.

    ``helpful_first``: first tokens of helpful answers (the base's to the guard prompts); with
    the model's own compliant answers' first tokens, they are dropped from the refusal tokens.
    """
    candidates = refusal_token_ids(tokenizer)
    ambiguous = {*helpful_first, *model.first_tokens, *base.first_tokens}
    keep = torch.tensor([t not in ambiguous for t in candidates], dtype=torch.bool)
    measured = []
    for name in PROXIES:
        rates = [(e.harmful_rate(name, keep), e.judged_harmful) for e in (base, model)]
        trusted = all(abs(p - j) <= tolerance + 1e-12 for p, j in rates)
        if name == "first-token" and not bool(keep.any()):
            trusted = False  # every refusal token also starts a helpful answer
        measured.append(
            Candidate(
                name=name,
                rate_base=rates[0][0],
                judge_base=rates[0][1],
                agreement_base=_agreement(base.refused(name, keep), base.judged),
                rate_model=rates[1][0],
                judge_model=rates[1][1],
                agreement_model=_agreement(model.refused(name, keep), model.judged),
                trusted=trusted,
            )
        )
    warning = None
    if requested != "auto":
        chosen = next(c for c in measured if c.name == requested)
        if not chosen.trusted:
            warning = (
                f"the {requested} refusal proxy disagrees with the generation judge by "
                f"{100 * chosen.error:.0f} points (tolerance {100 * tolerance:.0f})"
            )
    else:
        trusted = [c for c in measured if c.trusted]
        chosen = trusted[0] if trusted else min(measured, key=lambda c: c.error)
        if not trusted:
            warning = (
                "no refusal proxy agrees with the generation judge within "
                f"{100 * tolerance:.0f} points; using {chosen.name}, off by "
                f"{100 * chosen.error:.0f}"
            )
    dropped = [t for t, k_ in zip(candidates, keep.tolist(), strict=True) if not k_]
    return ProxyChoice(
        name=chosen.name,
        candidates=tuple(measured),
        excluded_tokens=tuple(tokenizer.convert_ids_to_tokens(dropped)),
        keep=keep,
        k=k,
        warning=warning,
    )


def make_proxy(
    choice: ProxyChoice, tokenizer: PreTrainedTokenizerBase, batch_size: int, seed: int
) -> RefusalProxy:
    """The proxy ``choice`` names, ready for the loop."""
    if choice.name == "first-token":
        candidates = refusal_token_ids(tokenizer)
        exclude = [t for t, k in zip(candidates, choice.keep.tolist(), strict=True) if not k]
        return FirstTokenProxy(tokenizer, exclude=exclude, batch_size=batch_size)
    return GenerationProxy(tokenizer, k=choice.k, batch_size=batch_size, seed=seed)
