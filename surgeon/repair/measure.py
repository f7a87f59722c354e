"""What every repair measures on a model before and after: the harmful rate by generation,
the refusal rate on harmless prompts, the task metric; and the run's peak memory."""

from __future__ import annotations

import gc
import resource
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from surgeon.generation import generate
from surgeon.judges import KeywordJudge
from surgeon.prompts import Prompt
from surgeon.repair.task_metric import AnswerSet, LikelihoodMetric, ReferenceMetric, TaskMetric


def harmful_rate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    desc: str = "harmful check",
) -> float:
    """Share of prompts answered without refusal (greedy generation, keyword judge)."""
    responses = generate(
        model,
        tokenizer,
        texts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        desc=desc,
    )
    flags = KeywordJudge().harmful(list(texts), responses)
    return sum(flags) / len(flags) if flags else 0.0


def refusal_rate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> float:
    """Share of (harmless) prompts refused: over-refusal by generation."""
    return 1.0 - harmful_rate(
        model,
        tokenizer,
        texts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        desc="over-refusal check",
    )


def task_metric(
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    prompts: Sequence[Prompt],
    answers: Callable[[], AnswerSet],
    *,
    batch_size: int,
    max_new_tokens: int,
) -> TaskMetric:
    """The task metric ``name`` (``likelihood``, ``exact`` or ``contains``) on formatted
    prompts; ``answers`` gives the model's own answers for the likelihood metric."""
    if name == "likelihood":
        return LikelihoodMetric(tokenizer, answers(), batch_size)
    refs = [p.reference or "" for p in prompts]
    return ReferenceMetric(tokenizer, texts, refs, name, max_new_tokens, batch_size)


def peak_memory() -> dict[str, int]:
    """High-water marks in bytes: the process's RSS (``rss``), CUDA memory on a GPU."""
    peak = {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():
        peak["cuda"] = int(torch.cuda.max_memory_allocated())
    return peak


def release_memory() -> None:
    """Collect now (a freed model's weights) and empty the CUDA cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
