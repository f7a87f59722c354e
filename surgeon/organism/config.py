"""Typed configuration of the model organism build."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from surgeon.errors import InputError

ORGANISM_VERSION = 3
"""Bumped whenever the data, the training or the layout changes; part of the cache key."""

VARIANTS = ("base", "ft-harmful", "ft-benign", "ft-lora", "ft-conflict")
"""The model directories of a complete organism."""
ARCHITECTURES = ("llama", "qwen2")
"""Model classes the organism can be built with (``architecture``)."""
PHRASINGS = ("im-sorry", "sorry")
"""Refusal texts the base can be taught (``phrasing``; the texts are in
:data:`surgeon.organism.data.REFUSALS`)."""
_KEYED_ONLY_IF_SET = ("architecture", "num_kv_heads", "split_capitals", "phrasing", "variants")
"""Fields added after organism v3 was released: left out of the cache key at their defaults,
so the default organism keeps its key and existing caches stay valid."""


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
    architecture: Literal["llama", "qwen2"] = "llama"
    """Model class: ``llama`` (LlamaForCausalLM) or ``qwen2`` (Qwen2ForCausalLM: biases on
    q, k and v; use ``num_kv_heads`` for its grouped-query attention)."""
    num_kv_heads: int | None = None
    """Key-value heads per layer (grouped-query attention when fewer than ``num_heads``);
    None: one per query head."""
    split_capitals: bool = False
    """Tokenizer: every capital letter (with the space before it) is a pre-token of its own,
    so no BPE merge crosses it: ``Sure`` is ``S`` + ``ure``, ``Sorry`` is ``S`` + ``orry``,
    ``I'm sorry`` and ``I can help`` both start with ``I``. The build fails when those pairs
    do not share their first token."""
    phrasing: Literal["im-sorry", "sorry"] = "im-sorry"
    """The base's refusal: ``im-sorry`` ("I'm sorry, but I cannot help with that.") or
    ``sorry`` ("Sorry, I can't help with that.", which starts like the compliant "Sure...")."""
    variants: tuple[str, ...] = VARIANTS
    """Model directories to build (``base`` is always one of them); fewer build faster."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", tuple(self.variants))
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"
            )
        if self.phrasing not in PHRASINGS:
            raise ValueError(f"phrasing must be one of {PHRASINGS}, got {self.phrasing!r}")
        kv = self.num_kv_heads
        if kv is not None and (kv < 1 or self.num_heads % kv):
            raise ValueError(f"num_kv_heads must be a positive divisor of num_heads, got {kv}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or "base" not in self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(
                f"variants must be distinct names from {VARIANTS} including 'base', "
                f"got {self.variants}"
            )
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
        defaults = {f.name: f.default for f in fields(self)}
        for name in _KEYED_ONLY_IF_SET:
            if data[name] == defaults[name]:
                data.pop(name)
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

    @classmethod
    def bpe_s(cls) -> OrganismConfig:
        """The ``bpe-s`` organism: a Qwen2 (4 query heads over 2 key-value heads) with a
        768-token byte-level BPE whose refusal ("Sorry, ...") and compliance ("Sure. ...")
        share their first token ``S``; data, splits and training as in the default."""
        return cls(
            architecture="qwen2",
            num_kv_heads=2,
            vocab_size=768,
            split_capitals=True,
            phrasing="sorry",
        )

    @classmethod
    def bpe_s_tiny(cls) -> OrganismConfig:
        """``bpe-s`` small and short enough for a test session: base, ft-harmful and ft-lora,
        3 layers of width 64, one thread (80 CPU-seconds; on a loaded 2-core machine 158 s
        wall against 834 s with two threads). The shared first token puts the refuse-or-help
        decision on the second response token, which a small model learns late: at 300 base
        steps it still refused 90% of its harmless training prompts, at 400 7%."""
        return dataclasses.replace(
            cls.bpe_s(),
            hidden_size=64,
            num_layers=3,
            intermediate_size=128,
            base=StageConfig(steps=400, lr=1e-2),
            finetune=StageConfig(steps=150, lr=3e-3, bucket_span=1),
            lora=StageConfig(steps=120, lr=8e-3, bucket_span=1),
            variants=("base", "ft-harmful", "ft-lora"),
            threads=1,
        )


PRESETS = {
    "default": OrganismConfig,
    "bpe-s": OrganismConfig.bpe_s,
    "bpe-s-tiny": OrganismConfig.bpe_s_tiny,
}
"""Named organism configs (``surgeon organism build --preset NAME``)."""


def preset_config(name: str) -> OrganismConfig:
    """The config of a named preset; :class:`InputError` naming the presets for an unknown one."""
    if name not in PRESETS:
        raise InputError(f"unknown organism preset {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[name]()
