"""Behaviour probe: harmful rate (with a Wilson interval, per category) and over-refusal rate.

Responses are greedy generations of chat-formatted prompts, judged by a pluggable
:class:`surgeon.judges.Judge`. The responses are kept in the result so that anyone can recount
them with another judge (methods.md section 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from surgeon.chat import format_prompt
from surgeon.generation import generate
from surgeon.judges.base import Judge
from surgeon.prompts import Prompt

Z95 = 1.959963984540054
"""Two-sided 95% normal quantile."""


@dataclass(frozen=True)
class BehaviourConfig:
    """How responses are generated."""

    max_new_tokens: int = 32
    """Tokens generated per response (greedy)."""
    batch_size: int = 16
    """Prompts per generation batch."""
    seed: int = 0
    """Seed set before generating."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class Rate:
    """A proportion with its 95% Wilson interval."""

    rate: float
    """Share of positives (0 when n is 0)."""
    ci: tuple[float, float]
    """95% Wilson score interval."""
    k: int
    """Number of positives."""
    n: int
    """Number of trials."""


@dataclass(frozen=True)
class BehaviourResult:
    """What the model does on harmful and on benign-but-scary prompts."""

    harmful: Rate
    """Share of harmful prompts answered harmfully."""
    by_category: dict[str, Rate]
    """The harmful rate per prompt category (uncategorised prompts under ``"uncategorized"``)."""
    over_refusal: Rate
    """Share of benign prompts that look dangerous (XSTest style) which were refused."""
    harmful_prompts: tuple[Prompt, ...]
    """The harmful prompts, in order."""
    harmful_responses: tuple[str, ...]
    """The model's response to each harmful prompt."""
    harmful_judgements: tuple[bool, ...]
    """True where the judge found the response harmful."""
    over_refusal_prompts: tuple[Prompt, ...]
    """The benign prompts, in order."""
    over_refusal_responses: tuple[str, ...]
    """The model's response to each benign prompt."""
    over_refusal_judgements: tuple[bool, ...]
    """True where the judge found the response a refusal."""
    judge: str
    """Name of the judge used."""


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials ((0, 1) when ``n`` is 0)."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate_of(flags: Sequence[bool]) -> Rate:
    """The share of True in ``flags`` with its Wilson interval."""
    k, n = sum(bool(f) for f in flags), len(flags)
    return Rate(k / n if n else 0.0, wilson_interval(k, n), k, n)


def by_category(prompts: Sequence[Prompt], flags: Sequence[bool]) -> dict[str, Rate]:
    """Rates of ``flags`` grouped by prompt category, sorted by category name."""
    groups: dict[str, list[bool]] = {}
    for prompt, flag in zip(prompts, flags, strict=True):
        groups.setdefault(prompt.category or "uncategorized", []).append(flag)
    return {cat: rate_of(groups[cat]) for cat in sorted(groups)}


def respond(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    config: BehaviourConfig,
    desc: str,
) -> list[str]:
    """Greedy responses to chat-formatted prompts."""
    if not prompts:
        return []
    texts = [format_prompt(tokenizer, p.prompt, p.system).text for p in prompts]
    return generate(
        model,
        tokenizer,
        texts,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        seed=config.seed,
        desc=desc,
    )


def measure_behaviour(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    harmful: Sequence[Prompt],
    over_refusal: Sequence[Prompt],
    judge: Judge,
    config: BehaviourConfig | None = None,
) -> BehaviourResult:
    """Generate, judge and count: harmful rate per category and over-refusal rate."""
    config = config or BehaviourConfig()
    if not harmful:
        raise ValueError("the behaviour probe needs at least one harmful prompt")
    h_resp = respond(model, tokenizer, harmful, config, "harmful prompts")
    o_resp = respond(model, tokenizer, over_refusal, config, "over-refusal prompts")
    h_flags = judge.harmful([p.prompt for p in harmful], h_resp) if h_resp else []
    o_flags = judge.refused([p.prompt for p in over_refusal], o_resp) if o_resp else []
    return BehaviourResult(
        harmful=rate_of(h_flags),
        by_category=by_category(harmful, h_flags),
        over_refusal=rate_of(o_flags),
        harmful_prompts=tuple(harmful),
        harmful_responses=tuple(h_resp),
        harmful_judgements=tuple(bool(f) for f in h_flags),
        over_refusal_prompts=tuple(over_refusal),
        over_refusal_responses=tuple(o_resp),
        over_refusal_judgements=tuple(bool(f) for f in o_flags),
        judge=judge.name,
    )
