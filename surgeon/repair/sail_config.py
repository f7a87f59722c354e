"""Options of the SAIL repair (methods.md section 3), one typed dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from surgeon.errors import InputError
from surgeon.options import flag

Weighting = Literal["attention", "uniform", "reference"]
FocalRule = Literal["mass", "row", "conflict_mass"]
"""The focal probe's rules (:data:`probes.focal.RULES`; named here so that the command line
builds its flags without importing torch)."""
Target = Literal["conflict", "harmful"]
WEIGHTINGS: tuple[str, ...] = ("attention", "uniform", "reference")

PAPER_R, PAPER_ALPHA, PAPER_LR = 8, 16, 1e-5
"""The released SAIL config: LoRA rank and alpha, learning rate (for 7B models, one epoch)."""


@dataclass(frozen=True)
class SailConfig:
    """Everything that steers :func:`surgeon.repair.sail.sail_repair`."""

    target: Target = flag("conflict")
    """What the preferences repair: ``conflict`` (obey the system over a conflicting user;
    pairs from the conflict set's training split) or ``harmful`` (refuse harmful requests;
    pairs from the harmful recovery prompts, chosen = refusal)."""
    focal_layers: str = flag("auto")
    """Decoder layers (0-based) that get LoRA, e.g. ``3,4``; ``auto``: the layers of the focal
    heads the focal probe finds on the model with the conflict set's training split."""
    focal_rule: FocalRule = "conflict_mass"
    """The focal probe's rule for ``auto`` (``conflict_mass``: the rule whose heads passed the
    causal check on the model organism; ``mass``, ``row``)."""
    focal_top_k: int = 10
    """Focal heads the probe keeps (FocalLoRA's top 10)."""
    weighting: Weighting = flag("attention")
    """Per-token weights of the DPO objective: ``attention`` (the focal heads' attention to the
    system span, mean 1 over each response), ``uniform`` (plain DPO) or ``reference``
    (TGDPO-style ``1 +/- alpha * beta * r_t`` from the aligned base; needs ``--base``)."""
    beta: float = flag(0.1)
    """DPO's beta (released SAIL config: 0.1)."""
    sft_weight: float = 0.0
    """Weight of an added negative log-likelihood of the chosen responses (RPO; 0: the plain
    token-weighted DPO objective)."""
    reference_alpha: float = 1.0
    """``reference`` weighting: TGDPO's alpha."""
    lora_r: int = PAPER_R
    """LoRA rank (released config: 8)."""
    lora_alpha: int = PAPER_ALPHA
    """LoRA alpha (released config: 16)."""
    lora_dropout: float = 0.0
    """LoRA dropout (released config: 0)."""
    lr: float = flag(2e-4)
    """Peak learning rate (AdamW; linear warm-up, then cosine to 10% of it); see the README's
    SAIL section for how it was chosen."""
    steps: int = flag(150)
    """Optimizer steps at most (fewer when the check split reaches the base's rate)."""
    batch_size: int = flag(8)
    """Preference pairs per step, over all processes (split evenly between them)."""
    warmup_steps: int = 10
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay of the LoRA parameters."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0: none)."""
    check_every: int = 20
    """Measure the check split's violation (or harmful) rate by generation every this many
    steps and stop once it is at most the base's plus ``check_margin`` (0: never)."""
    check_fraction: float = 0.1
    """Share of the training prompts held back from the pairs as the early-stop check split."""
    check_margin: float = 0.0
    """Allowed excess of the check split's rate over the base's for the early stop."""
    n_train: int | None = 512
    """Training prompts sampled (seeded) to build pairs from (None: all)."""
    n_eval: int | None = 100
    """Held-out harmful and harmless prompts sampled (seeded) for the before/after rates."""
    heldout_fraction: float = 0.3
    """Share of a conflicts file without a held-out split kept for the final check (and of a
    harmful file for ``--target harmful``)."""
    max_new_tokens: int = 64
    """Tokens generated per answer (pairs, checks, before/after measurements)."""
    max_response_tokens: int = 64
    """Tokens of a response that enter the loss (longer ones are cut)."""
    eval_batch_size: int = 32
    """Prompts per generation batch and pairs per reference-pass batch."""
    task_metric: Literal["auto", "exact", "contains"] = flag("auto")
    """Task metric on ``--task`` prompts (``auto``: exact match)."""
    task_tolerance: float = 0.05
    """The gate's allowed relative task drop (with ``--task``)."""
    merge: bool = flag(False)
    """Also write the model with the adapter merged into ``DIR/merged/``."""
    seed: int = flag(0)
    """Seed of the samples, the splits, the LoRA initialisation and the batch order."""

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise InputError(f"weighting must be one of {', '.join(WEIGHTINGS)}")
        if self.focal_rule not in get_args(FocalRule):
            raise InputError(f"focal_rule must be one of {', '.join(get_args(FocalRule))}")
        positive = {
            "focal_top_k": self.focal_top_k,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
            "max_response_tokens": self.max_response_tokens,
            "eval_batch_size": self.eval_batch_size,
        }
        for name, value in positive.items():
            if value < 1:
                raise InputError(f"{name} must be >= 1, got {value}")
        for name in ("steps", "warmup_steps", "check_every"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("n_train", "n_eval"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be >= 1 or unset, got {value}")
        if self.beta <= 0:
            raise InputError(f"beta must be > 0, got {self.beta}")
        if self.lr <= 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.lora_dropout < 1:
            raise InputError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        for name in ("check_fraction", "heldout_fraction", "task_tolerance", "check_margin"):
            if not 0 <= getattr(self, name) < 1:
                raise InputError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0 or self.max_grad_norm < 0 or self.sft_weight < 0:
            raise InputError("weight_decay, max_grad_norm and sft_weight must be >= 0")
