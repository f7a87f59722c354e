"""What a rollback repair learns from the aligned base before it loads the fine-tune: the
layer, the harmful objective's target (the base's answers or its hidden state), and the base's
rates on the recovery, check, held-out and guard prompts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from surgeon.architecture import find_layers
from surgeon.judges import FirstTokenScorer
from surgeon.loading import LoadOptions, load_model
from surgeon.prompts import Prompt
from surgeon.repair.hidden import mean_hidden
from surgeon.repair.measure import harmful_rate, refusal_rate, release_memory
from surgeon.repair.prompt_sets import formatted
from surgeon.repair.rollback_config import RollbackConfig, generation_options
from surgeon.repair.task_metric import AnswerSet, own_answers


@dataclass(frozen=True)
class BaseFacts:
    """What the base tells us before it is freed."""

    layer: int
    direction: Tensor | None
    """``h`` (``cosine`` objective only)."""
    center: Tensor | None
    first_token_harmful: float
    heldout_harmful: float
    answers: AnswerSet | None
    """A's greedy answers to the recovery prompts (``answers`` objective only)."""
    guard_refusal: float
    """A's first-token refusal rate on the harmless guard prompts (0 without a guard)."""
    guard_generated: float | None
    """A's refusal rate on the guard prompts by generation (None without a guard)."""
    check_harmful: float = 0.0
    """A's first-token harmful rate on the held-back check prompts (0 without them)."""


def measure_base(
    base: str | Path,
    opts: LoadOptions,
    recovery: list[Prompt],
    heldout: list[Prompt],
    harmless: list[Prompt],
    config: RollbackConfig,
    check: list[Prompt] | None = None,
) -> BaseFacts:
    """Load A, read its harmful objective's target and its rates, and free it again."""
    loaded = load_model(base, options=opts)
    layers = find_layers(loaded.model)
    layer = config.resolved_layer(loaded.spec.n_layers)
    rec = formatted(loaded.tokenizer, recovery)
    harmless_texts = formatted(loaded.tokenizer, harmless)
    direction = center = answers = None
    if config.objective == "cosine":
        direction = mean_hidden(
            loaded.model, loaded.tokenizer, layers, layer, rec, config.batch_size
        )
        if config.direction == "difference":
            center = mean_hidden(
                loaded.model, loaded.tokenizer, layers, layer, harmless_texts, config.batch_size
            )
            direction = direction - center
    else:
        answers = own_answers(
            loaded.model, loaded.tokenizer, rec, config.max_new_tokens, config.batch_size
        )
    scorer = FirstTokenScorer(loaded.tokenizer, batch_size=config.batch_size)
    first = 1.0 - scorer.refusal_rate(loaded.model, rec)
    check_harmful = (
        1.0 - scorer.refusal_rate(loaded.model, formatted(loaded.tokenizer, check))
        if check
        else 0.0
    )
    gen = generation_options(config)
    held = harmful_rate(loaded.model, loaded.tokenizer, formatted(loaded.tokenizer, heldout), **gen)
    guard, guard_generated = 0.0, None
    if config.over_refusal_guard:
        guard = scorer.refusal_rate(loaded.model, harmless_texts)
        guard_generated = refusal_rate(loaded.model, loaded.tokenizer, harmless_texts, **gen)
    del loaded, layers, scorer
    release_memory()
    return BaseFacts(
        layer, direction, center, first, held, answers, guard, guard_generated, check_harmful
    )
