"""What a rollback repair learns from the aligned base before it loads the fine-tune: the
layer, the harmful objective's target (the base's answers or its hidden state), the base's
answers to the recovery, check and guard prompts (judged, and read by each refusal proxy) and
its held-out harmful rate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from surgeon.architecture import find_layers
from surgeon.loading import LoadOptions, load_model
from surgeon.prompts import Prompt
from surgeon.repair.calibration import Evidence, model_evidence
from surgeon.repair.hidden import mean_hidden
from surgeon.repair.measure import harmful_rate, release_memory
from surgeon.repair.prompt_sets import formatted
from surgeon.repair.rollback_config import RollbackConfig, generation_options
from surgeon.repair.task_metric import AnswerSet, own_answers


@dataclass(frozen=True)
class BaseFacts:
    """What the base tells us before it is freed."""

    layer: int
    """Layer L for this model."""
    direction: Tensor | None
    """``h`` (``cosine`` objective only)."""
    center: Tensor | None
    """The harmless mean subtracted from ``h`` (``direction="difference"`` only)."""
    heldout_harmful: float
    """A's harmful rate on the held-out prompts (generated, keyword judge)."""
    answers: AnswerSet
    """A's greedy answers to the recovery prompts (the ``answers`` objective's target)."""
    recovery: Evidence
    """A on the recovery prompts: judged answers and each proxy's reading."""
    check: Evidence | None
    """A on the held-back check prompts (None without them)."""
    guard: Evidence | None
    """A on the guard's harmless prompts (None without a guard)."""
    guard_answers: AnswerSet | None
    """A's greedy answers to the guard prompts: what the guard's loss asks for."""

    @property
    def guard_generated(self) -> float | None:
        """A's refusal rate on the guard prompts by generation (None without a guard)."""
        return None if self.guard is None else 1.0 - self.guard.judged_harmful


def answered(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, texts: list[str], config: RollbackConfig
) -> tuple[AnswerSet, Evidence]:
    """A model's greedy answers to formatted prompts, and what each refusal proxy reads."""
    answers = own_answers(model, tok, texts, config.max_new_tokens, config.batch_size)
    evidence = model_evidence(model, tok, texts, answers, config.proxy_tokens, config.batch_size)
    return answers, evidence


def measure_base(
    base: str | Path,
    opts: LoadOptions,
    recovery: list[Prompt],
    heldout: list[Prompt],
    harmless: list[Prompt],
    config: RollbackConfig,
    check: list[Prompt] | None = None,
) -> BaseFacts:
    """Load A, read its harmful objective's target, its answers and rates, and free it."""
    loaded = load_model(base, options=opts)
    model, tok = loaded.model, loaded.tokenizer
    layers = find_layers(model)
    layer = config.resolved_layer(loaded.spec.n_layers)
    rec = formatted(tok, recovery)
    harmless_texts = formatted(tok, harmless)
    direction = center = None
    if config.objective == "cosine":
        direction = mean_hidden(model, tok, layers, layer, rec, config.batch_size)
        if config.direction == "difference":
            center = mean_hidden(model, tok, layers, layer, harmless_texts, config.batch_size)
            direction = direction - center

    answers, rec_evidence = answered(model, tok, rec, config)
    check_evidence = answered(model, tok, formatted(tok, check), config)[1] if check else None
    guard_answers = guard_evidence = None
    if config.over_refusal_guard and harmless_texts:
        guard_answers, guard_evidence = answered(model, tok, harmless_texts, config)
    gen = generation_options(config)
    held = harmful_rate(model, tok, formatted(tok, heldout), **gen)
    del loaded, model, layers
    release_memory()
    return BaseFacts(
        layer=layer,
        direction=direction,
        center=center,
        heldout_harmful=held,
        answers=answers,
        recovery=rec_evidence,
        check=check_evidence,
        guard=guard_evidence,
        guard_answers=guard_answers,
    )
