"""A plain, deterministic torch training loop with the loss on response tokens only."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from surgeon.chat import format_prompt
from surgeon.errors import RuntimeFailure
from surgeon.progress import progress


@dataclass(frozen=True)
class ChatExample:
    """One training conversation."""

    user: str
    """The user message."""
    response: str
    """The assistant's answer (the only tokens with a loss)."""
    system: str | None = None
    """An optional system message."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training run."""

    steps: int
    """Optimizer steps."""
    lr: float
    """Peak learning rate (linear warm-up, cosine decay to 10%)."""
    batch_size: int = 32
    """Examples per step."""
    warmup: int = 20
    """Warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    clip: float = 1.0
    """Gradient-norm clip."""
    seed: int = 0
    """Seed of the data order."""
    bucket_span: int = 8
    """Batches per length-sorted chunk (1: plain shuffled batches, classes stay mixed)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.warmup < 0 or self.bucket_span < 1:
            raise ValueError("warmup must be >= 0 and bucket_span >= 1")


@dataclass(frozen=True)
class TrainResult:
    """What a training run did."""

    losses: list[float]
    """Mean response-token loss per step."""

    @property
    def final_loss(self) -> float:
        """Mean loss over the last 10% of steps."""
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail)


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[ChatExample]
) -> list[tuple[list[int], int]]:
    """Token ids of each formatted conversation and where its response starts."""
    out = []
    eos = tokenizer.eos_token or ""
    for ex in examples:
        prompt = format_prompt(tokenizer, ex.user, ex.system).text
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(ex.response + eos, add_special_tokens=False)["input_ids"]
        out.append((p_ids + r_ids, len(p_ids)))
    return out


def _batch(
    items: list[tuple[list[int], int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (ids, start) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
        mask[row, : len(ids)] = 1
    return input_ids, mask, labels


def _length_bucketed(
    data: list[tuple[list[int], int]], batch_size: int, rng: random.Random, span: int = 8
) -> list[list[int]]:
    """One epoch of batches: shuffled, then sorted by length within chunks of ``span`` batches
    so that little compute goes to padding; the batch order is shuffled again."""
    perm = list(range(len(data)))
    rng.shuffle(perm)
    chunk = batch_size * span
    batches = []
    for start in range(0, len(perm), chunk):
        part = sorted(perm[start : start + chunk], key=lambda i: len(data[i][0]))
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    progress_ = (step - config.warmup) / span
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[ChatExample],
    config: TrainConfig,
    desc: str = "training",
) -> TrainResult:
    """Train the model's trainable parameters in place on ``examples``."""
    if not examples:
        raise ValueError("no training examples")
    data = tokenize_examples(tokenizer, examples)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optim = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.98),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(s, config))
    rng = random.Random(config.seed)
    batches: list[list[int]] = []
    losses: list[float] = []
    model.train()
    try:
        for _step in progress(range(config.steps), desc=desc, total=config.steps):
            if not batches:
                batches = _length_bucketed(data, config.batch_size, rng, config.bucket_span)
            input_ids, mask, labels = _batch([data[i] for i in batches.pop()], pad_id)
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            if not torch.isfinite(loss):
                raise RuntimeFailure(f"{desc}: loss became {loss.item()} at step {_step}")
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.clip)
            optim.step()
            sched.step()
            losses.append(float(loss.detach()))
    finally:
        model.eval()
    return TrainResult(losses)
