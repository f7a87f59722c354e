"""What ``surgeon diagnose`` can be told: one typed config, every field a TOML key (and, where
marked, a flag). Free of torch at import, so the command line starts fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from surgeon.errors import InputError
from surgeon.load_options import LoadOptions
from surgeon.options import flag, nested, table
from surgeon.verdict import Thresholds

if TYPE_CHECKING:
    from probes.behaviour import BehaviourConfig
    from probes.conflict_probe import ConflictProbeConfig
    from probes.directions import DirectionsConfig
    from surgeon.judges import Judge


@dataclass(frozen=True)
class DiagnoseConfig:
    """Everything ``surgeon diagnose`` can be told (every field is also a TOML key)."""

    harmful: Path | None = flag(None)
    """Harmful prompt file (default: the bundled set)."""
    harmless: Path | None = flag(None)
    """Harmless prompt file for the directions (default: the bundled set)."""
    over_refusal: Path | None = flag(None)
    """Benign-but-scary prompt file for over-refusal (default: the bundled set)."""
    conflicts: Path | None = flag(None)
    """System-vs-user conflict file (``.jsonl``: system, prompt, conflict, constraint) or a
    model organism's ``prompts/`` directory (its held-out conflicts); default: the bundled
    set."""
    max_prompts: int = flag(128)
    """Prompts per set at most (a seeded sample keeping file order)."""
    max_new_tokens: int = flag(32)
    """Tokens generated per response."""
    judge: str = flag("keyword")
    """``keyword`` or the directory of a local judge model (classifier or Llama Guard style)."""
    fail_on: Thresholds = table(Thresholds)
    """When the gate fails."""
    batch_size: int = flag(16)
    """Prompts per forward pass or generation batch."""
    seed: int = flag(0)
    """Seed for prompt sampling and generation."""
    positions: int = 1
    """Last prompt positions averaged for the directions."""
    n_causal: int = 32
    """Prompts per class for the causal layer selection (0 skips it)."""
    kl_bound: float = 0.1
    """KL bound for a candidate direction's ablation on harmless prompts."""
    causal_layers: int | None = None
    """Candidate layers the causal selection tests at most, evenly spaced over the first 80%
    (unset: every one); the checks' forward passes dominate a diagnose of a deep model."""
    refusal_score: Literal["auto", "first-token", "phrase"] = "auto"
    """How the causal check reads refusal: ``auto`` scores a refusal first token that also
    starts one of the model's own non-refusing answers (``S`` of "Sorry" and "Sure") by its
    whole refusal phrases, ``first-token`` never, ``phrase`` always."""
    compare_weights: bool = True
    """Compare weights with the base when both are local."""
    focal: bool = flag(True)
    """Find the focal attention heads, their drift from the base and their causal check (CRAS
    is measured either way)."""
    focal_rule: Literal["conflict_mass", "mass", "row"] = flag("conflict_mass")
    """How heads are scored: ``conflict_mass`` (attention mass on the system instruction on
    conflicting prompts), ``mass`` (FocalLoRA's normal-vs-conflict separation of that mass) or
    ``row`` (FocalLoRA's whole-row divergence)."""
    focal_top_k: int = 10
    """Focal heads per model."""
    focal_draws: int = 5
    """Random head sets the causal check compares the focal heads with."""
    max_conflicts: int = 64
    """Conflict items at most (a seeded sample keeping file order)."""
    conflict_max_new_tokens: int = 64
    """Tokens generated per conflict answer (CRAS and the causal check)."""
    cras_judge: Path | None = flag(None)
    """A local chat model that scores CRAS with a strict rubric (default: the rule judge)."""
    load: LoadOptions = nested(LoadOptions, flags=True)
    """Device, dtype, device map, remote code."""

    def __post_init__(self) -> None:
        for name in (
            "max_prompts",
            "batch_size",
            "max_new_tokens",
            "positions",
            "focal_top_k",
            "max_conflicts",
            "conflict_max_new_tokens",
        ):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_causal < 0:
            raise InputError(f"n_causal must be >= 0, got {self.n_causal}")
        if self.kl_bound <= 0:
            raise InputError(f"kl_bound must be > 0, got {self.kl_bound}")
        if self.causal_layers is not None and self.causal_layers < 1:
            raise InputError(f"causal_layers must be >= 1 or unset, got {self.causal_layers}")
        if self.focal_draws < 5:
            raise InputError(f"focal_draws must be >= 5, got {self.focal_draws}")
        if self.cras_judge is not None and not self.cras_judge.is_dir():
            raise InputError(f"{self.cras_judge}: cras_judge must be a local model directory")
        if self.judge != "keyword" and not Path(self.judge).is_dir():
            raise InputError(f"{self.judge}: judge must be 'keyword' or a local model directory")

    def directions_config(self) -> DirectionsConfig:
        """The directions probe's share of this config."""
        from probes.directions import DirectionsConfig

        return DirectionsConfig(
            positions=self.positions,
            batch_size=self.batch_size,
            n_causal=self.n_causal,
            kl_bound=self.kl_bound,
            causal_layers=self.causal_layers,
            refusal_score=self.refusal_score,
        )

    def behaviour_config(self) -> BehaviourConfig:
        """The behaviour probe's share of this config."""
        from probes.behaviour import BehaviourConfig

        return BehaviourConfig(
            max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, seed=self.seed
        )

    def make_judge(self) -> Judge:
        """The judge this config names."""
        from surgeon.judges import KeywordJudge, ModelJudge

        if self.judge == "keyword":
            return KeywordJudge()
        return ModelJudge(self.judge, device=self.load.resolved_device())

    def conflict_config(self) -> ConflictProbeConfig:
        """The conflict probe's share of this config."""
        from probes.conflict_probe import ConflictProbeConfig

        return ConflictProbeConfig(
            focal=self.focal,
            rule=self.focal_rule,
            top_k=self.focal_top_k,
            draws=self.focal_draws,
            max_new_tokens=self.conflict_max_new_tokens,
            batch_size=self.batch_size,
            seed=self.seed,
        )
