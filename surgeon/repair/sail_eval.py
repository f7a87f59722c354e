"""What SAIL measures before and after, on held-out data: conflicts (violation rate and CRAS by
the rule judge), the harmful rate, over-refusal and, with a task file, the task metric; and
the check split's rate that the loop's early stop reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedTokenizerBase

from probes.cras import CrasConfig, respond_conflicts, run_cras
from surgeon.conflicts import ConflictItem
from surgeon.constraints import check_constraint
from surgeon.errors import InputError
from surgeon.prompts import Prompt
from surgeon.repair.measure import harmful_rate, refusal_rate
from surgeon.repair.prompt_sets import formatted
from surgeon.repair.sail_config import SailConfig
from surgeon.repair.task_metric import ReferenceMetric, resolve_metric_name


@dataclass(frozen=True)
class EvalSets:
    """The held-out prompts of the before/after measurements."""

    conflicts: tuple[ConflictItem, ...]
    """Held-out conflict items (never in training)."""
    harmful: tuple[Prompt, ...]
    """Held-out harmful prompts."""
    harmless: tuple[Prompt, ...]
    """Harmless prompts whose refusal is over-refusal."""
    task: tuple[Prompt, ...] = ()
    """Task prompts with references (none: no task metric)."""


@dataclass(frozen=True)
class Measures:
    """One model's behaviour on the held-out sets."""

    violation_rate: float
    """Share of held-out conflicts whose answer broke the constraint."""
    cras: float
    """Mean CRAS (1-5, rule judge) over the held-out conflicts."""
    cras_dimensions: dict[str, float]
    """CRAS per dimension."""
    harmful_rate: float
    """Share of held-out harmful prompts answered without refusal."""
    over_refusal: float | None
    """Share of harmless prompts refused (None without any)."""
    task: float | None
    """Task metric (None without task prompts)."""


def cras_config(config: SailConfig) -> CrasConfig:
    """The CRAS generation settings of a SAIL run."""
    return CrasConfig(
        max_new_tokens=config.max_new_tokens,
        batch_size=config.eval_batch_size,
        seed=config.seed,
        score_normal=False,
    )


def task_metric_name(config: SailConfig, task: Sequence[Prompt]) -> str:
    """``exact`` or ``contains`` for task prompts with references; ``none`` without prompts."""
    if not task:
        return "none"
    name = resolve_metric_name(config.task_metric, [p.reference for p in task])
    if name == "likelihood":
        raise InputError("--task for SAIL needs a 'reference' for every task prompt")
    return name


def measure_model(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, sets: EvalSets, config: SailConfig
) -> Measures:
    """Generate and judge every held-out set on ``model``."""
    cras = run_cras(model, tokenizer, sets.conflicts, cras_config(config))  # type: ignore[arg-type]
    gen = {
        "max_new_tokens": config.max_new_tokens,
        "batch_size": config.eval_batch_size,
        "seed": config.seed,
    }
    harm = harmful_rate(model, tokenizer, formatted(tokenizer, sets.harmful), **gen)  # type: ignore[arg-type]
    over = (
        refusal_rate(model, tokenizer, formatted(tokenizer, sets.harmless), **gen)  # type: ignore[arg-type]
        if sets.harmless
        else None
    )
    task = None
    if sets.task:
        metric = ReferenceMetric(
            tokenizer,
            formatted(tokenizer, sets.task),
            [p.reference or "" for p in sets.task],
            task_metric_name(config, sets.task),
            config.max_new_tokens,
            config.eval_batch_size,
        )
        task = metric.measure(model)
    return Measures(
        violation_rate=cras.violation_rate,
        cras=cras.mean,
        cras_dimensions=dict(cras.dimensions),
        harmful_rate=harm,
        over_refusal=over,
        task=task,
    )


def conflict_answers(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[ConflictItem],
    config: SailConfig,
) -> list[str]:
    """Greedy answers to the items' conflicting messages."""
    return respond_conflicts(model, tokenizer, items, cras_config(config))  # type: ignore[arg-type]


def violation_rate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[ConflictItem],
    config: SailConfig,
) -> float:
    """Share of ``items`` whose conflicting message gets an answer that breaks the constraint."""
    answers = conflict_answers(model, tokenizer, items, config)
    broken = [not check_constraint(i.constraint, a) for i, a in zip(items, answers, strict=True)]
    return sum(broken) / len(broken) if broken else 0.0


def harmful_check(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    config: SailConfig,
) -> float:
    """Harmful rate of ``prompts`` by generation (the harmful target's check)."""
    return harmful_rate(
        model,  # type: ignore[arg-type]
        tokenizer,
        formatted(tokenizer, prompts),
        max_new_tokens=config.max_new_tokens,
        batch_size=config.eval_batch_size,
        seed=config.seed,
    )
