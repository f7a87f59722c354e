"""System-vs-user conflicts on one model: its focal heads, its role adherence (CRAS) and, on
request, whether mean-ablating the focal heads changes its conflict violation rate more than
ablating as many random heads.

Composes the focal-head probe (:mod:`probes.focal`), CRAS (:mod:`probes.cras`) and the head
ablation (:mod:`probes.head_ablation`) for one loaded model, so ``diagnose`` can run it on the
base and on the fine-tune in turn and free each model after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from probes.cras import (
    CrasConfig,
    CrasJudge,
    CrasResult,
    RuleJudge,
    respond_conflicts,
    run_cras,
)
from probes.focal import FocalConfig, FocalResult, Rule, focal_probe
from probes.head_ablation import CausalCheck, causal_check, head_means
from probes.heads import find_attention
from surgeon.chat import format_prompt
from surgeon.conflicts import ConflictItem
from surgeon.constraints import check_constraint


@dataclass(frozen=True)
class ConflictProbeConfig:
    """How the conflict probe runs."""

    focal: bool = True
    """Find focal heads (and, with ``causal``, check them); False runs CRAS alone."""
    rule: Rule = "conflict_mass"
    """The focal-head rule (:mod:`probes.focal`)."""
    top_k: int = 10
    """Focal heads, at most half of all heads (so the causal check can draw as many random
    heads from the others)."""
    draws: int = 5
    """Random head sets of the causal check."""
    max_new_tokens: int = 64
    """Tokens generated per conflict answer (CRAS and the causal check)."""
    batch_size: int = 16
    """Prompts per batch."""
    seed: int = 0
    """Seed of generation and of the random heads."""


@dataclass(frozen=True)
class ConflictProbeResult:
    """One model on the conflict set."""

    focal: FocalResult | None
    """Per-head scores and the focal heads (None when skipped)."""
    cras: CrasResult
    """Role adherence and violation rates."""
    causal: CausalCheck | None
    """The focal heads' ablation against random heads (None when not run)."""


def _cras_config(config: ConflictProbeConfig) -> CrasConfig:
    return CrasConfig(
        max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, seed=config.seed
    )


def violation_rate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[ConflictItem],
    config: ConflictProbeConfig,
) -> float:
    """Share of conflicting messages whose greedy answer breaks the system constraint (the
    same answers and checkers as CRAS's violation rate)."""
    answers = respond_conflicts(model, tokenizer, items, _cras_config(config))
    broken = [not check_constraint(i.constraint, a) for i, a in zip(items, answers, strict=True)]
    return sum(broken) / len(broken) if broken else 0.0


def probe_conflicts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[ConflictItem],
    config: ConflictProbeConfig,
    *,
    causal: bool = False,
    judge: CrasJudge | None = None,
) -> ConflictProbeResult:
    """Focal heads, CRAS and (``causal``) the ablation check of ``model`` on ``items``."""
    cras = run_cras(model, tokenizer, items, _cras_config(config), judge or RuleJudge())
    if not config.focal:
        return ConflictProbeResult(None, cras, None)
    k = max(1, min(config.top_k, len(find_attention(model).all_heads()) // 2))
    focal = focal_probe(
        model,
        tokenizer,
        items,
        FocalConfig(rule=config.rule, top_k=k, batch_size=config.batch_size),
    )
    check = None
    if causal:
        normal = [format_prompt(tokenizer, i.prompt, i.system).text for i in items]
        means = head_means(model, tokenizer, normal, batch_size=config.batch_size)
        check = causal_check(
            model,
            focal.head_set(),
            means,
            lambda: violation_rate(model, tokenizer, items, config),
            draws=config.draws,
            seed=config.seed,
            min_change=1.0 / len(items),
            baseline=cras.violation_rate,  # the same answers CRAS judged
        )
    return ConflictProbeResult(focal, cras, check)


def cras_judge(path: Path | None, device: str) -> CrasJudge:
    """The rule judge, or the local LLM judge at ``path``."""
    if path is None:
        return RuleJudge()
    from probes.cras_judge import LlmJudge

    return LlmJudge(str(path), device=device)
