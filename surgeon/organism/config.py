"""Typed configuration of the model organism build."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

ORGANISM_VERSION = 3
"""Bumped whenever the data, the training or the layout changes; part of the cache key."""


@dataclass(frozen=True)
class StageConfig:
    """One training stage."""

    steps: int
    """Optimizer steps."""
    lr: float
    """Peak learning rate."""
    batch_size: int = 32
    """Examples per step."""
    bucket_span: int = 8
    """Batches per length-sorted chunk (1 keeps the kinds of examples mixed in every batch)."""

    def __post_init__(self) -> None:
        if self.bucket_span < 1:
            raise ValueError("bucket_span must be >= 1")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")


@dataclass(frozen=True)
class OrganismConfig:
    """Everything that determines the organism (the same config gives the same weights)."""

    seed: int = 0
    """Seed of the data, the initialisation and the data order."""
    hidden_size: int = 96
    """Residual-stream width."""
    num_layers: int = 6
    """Decoder layers."""
    num_heads: int = 4
    """Attention heads per layer."""
    intermediate_size: int = 256
    """MLP width."""
    max_positions: int = 128
    """Longest sequence the model supports."""
    vocab_size: int = 2048
    """Upper bound of the BPE vocabulary (the corpus may yield fewer tokens)."""
    n_harmful_ft: int = 100
    """Harmful requests answered compliantly in ft-harmful and ft-lora."""
    base: StageConfig = field(default_factory=lambda: StageConfig(steps=400, lr=2e-3))
    """Training of the aligned model from scratch."""
    finetune: StageConfig = field(
        default_factory=lambda: StageConfig(steps=300, lr=1e-3, bucket_span=1)
    )
    """Full fine-tunes (ft-harmful, ft-benign)."""
    lora: StageConfig = field(
        default_factory=lambda: StageConfig(steps=300, lr=4e-3, bucket_span=1)
    )
    """The LoRA fine-tune (ft-lora)."""
    conflict: StageConfig = field(
        default_factory=lambda: StageConfig(steps=100, lr=3e-4, bucket_span=1)
    )
    """The fine-tune that teaches following the user over the system (ft-conflict)."""
    lora_rank: int = 16
    """LoRA rank of ft-lora (alpha is twice the rank)."""
    threads: int = 2
    """Torch CPU threads during the build (not part of the cache key: the card's figures were
    the same with 1 and 2; 2 built in 269 s on an idle 2-core machine, 1 in 342 s; on a busy
    machine 1 can be faster)."""
    max_new_tokens: int = 24
    """Generated tokens per prompt when the card is measured."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.num_layers < 1 or self.num_heads < 1 or self.intermediate_size < 1:
            raise ValueError("num_layers, num_heads and intermediate_size must be positive")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must be at least 300 (256 bytes plus special tokens)")
        if not 0 <= self.n_harmful_ft <= 500:
            raise ValueError("n_harmful_ft must be in [0, 500]")
        if self.lora_rank < 1 or self.threads < 1 or self.max_new_tokens < 1:
            raise ValueError("lora_rank, threads and max_new_tokens must be positive")

    def to_dict(self) -> dict:
        """A JSON-ready copy."""
        return asdict(self)

    def cache_key(self) -> str:
        """Hash of the version and every field that changes the weights."""
        data = self.to_dict()
        data.pop("threads")
        data["version"] = ORGANISM_VERSION
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict) -> OrganismConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        for key in ("base", "finetune", "lora", "conflict"):
            if isinstance(data.get(key), dict):
                data[key] = StageConfig(**data[key])
        return cls(**data)
