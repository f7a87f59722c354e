"""Options of the rollback repair (methods.md section 2), one typed dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from surgeon.errors import InputError

Selection = Literal["task-aware", "paper"]
TaskMetricName = Literal["auto", "exact", "contains"]
Objective = Literal["cosine", "answers"]
TaskHold = Literal["on-restart", "always", "never"]
OverRefusalCheck = Literal["generation", "first-token"]

PAPER_RECOVERY_RATE = 0.002
"""The published share of eligible entries restored per step (0.2%)."""
PAPER_STEPS = 20
"""The published maximum number of steps."""
PAPER_ROLLBACK_FRACTION = 0.2
"""The published share of each step put back by the tolerance rollback."""
FINE_RECOVERY_RATE = 0.0005
"""Task-aware selection's step (0.05%): a quarter of the published one."""
FINE_STEPS = 80
"""Task-aware selection's maximum number of steps: the same 4% ceiling as the published 20."""


@dataclass(frozen=True)
class RollbackConfig:
    """Everything that steers :func:`surgeon.repair.rollback.rollback_repair`."""

    layer: int | None = None
    """Decoder layer L (1-based count of layers: entries in layers ``0..L-1`` may be restored and
    the harmful direction is read from the residual stream after layer ``L-1``, i.e. Hugging
    Face's ``hidden_states[L]``). ``None``: ``round(2/3 * n_layers)``; a probe may pass the
    layer it selected."""
    selection: Selection = "task-aware"
    """``task-aware`` (default): rank by the first-order harmful benefit ``g_h * (W - A)`` and
    skip entries whose restoration raises the task loss to first order; ``paper``: the
    published rule, top ``|g_h|`` among entries whose ``W - A`` has the sign of ``g_h``."""
    objective: Objective = "answers"
    """The harmful loss whose gradient chooses entries: ``cosine``, ``-cos(state after layer L,
    h)`` (the paper's); ``answers``, the cross-entropy of the base's own greedy answers to the
    recovery prompts (its refusals), which points at the entries that decide what the model
    says rather than at every component of one hidden state. (A first-token refusal loss
    was tried and rejected: it taught a LoRA fine-tune to answer a lone "I".)"""
    first_token_share: float = 0.5
    """``answers`` objective: share of the loss on the first answer token alone (the rest is the
    token mean over the whole answers). Under teacher forcing the rest of a refusal is an easy
    continuation: on the LoRA organism the plain token mean fell to 0.08 while no recovery
    prompt's first token was a refusal. At 0.5 the repair restored 0.50% of the decoder weights
    on the full-fine-tune organism (0.59% at 0) and 1.76% on the LoRA one (2.54% at 0), both
    with the generation check below and the published 0.2% step."""
    over_refusal_guard: bool = True
    """Guard against over-refusal: add the first-token refusal loss on harmless prompts (the
    ``harmless`` prompts, else the bundled set) to the harmful loss, and count the target as
    reached only while their first-token refusal rate is at most the base's plus
    ``over_refusal_margin``. Without it the repaired LoRA organism refused 57% of held-out
    harmless prompts (the base 1%)."""
    over_refusal_check: OverRefusalCheck = "generation"
    """How the guard's bound is checked once the first-token rates are on target:
    ``generation`` (default) also generates answers to the guard's prompts and judges them
    with the keyword judge, against the base's generated rate plus the margin;
    ``first-token`` trusts the first-token refusal rate alone, which on the LoRA organism
    passed repairs that refused 9-20% of the guard's prompts when generating."""
    over_refusal_margin: float = 0.05
    """Allowed rise of the guard prompts' first-token refusal rate over the base's."""
    guard_weight: float = 1.0
    """Weight of the guard's loss next to the harmful loss."""
    task_hold: TaskHold = "on-restart"
    """Task-aware: when to hold back candidates whose restoration would raise the task loss to
    first order. ``on-restart`` (default): only in the try that the tolerance rollback restarts
    after the task metric fell below its floor; ``always``: from the first step; ``never``.
    On the organism the hold from the first step cost 3x the restored entries on the full
    fine-tune (1.50% of decoder weights against 0.46%, 0.05% steps, 64 recovery prompts) while
    the task stayed above its floor without it."""
    task_refresh: int = 1
    """Task-aware: recompute the task gradient ``g_t`` (and so which entries are held back
    because restoring them would raise the task loss) every this many steps; 0 computes it
    once, from F, before the first step."""
    direction: Literal["mean", "difference"] = "mean"
    """``cosine`` objective: the harmful direction ``h`` at layer L. ``mean``: the base's mean
    last-token state over the harmful recovery prompts (the paper's code); ``difference``: that
    mean minus the base's mean over harmless prompts (the refusal direction of Arditi et al.),
    with the same harmless mean subtracted from the working model's states before the cosine.
    The raw mean carries the large component shared by all prompts, so its cosine can sit near
    1 while behaviour differs."""
    recovery_rate: float | None = None
    """Share of the eligible entries restored per step. ``None``: 0.05% with ``task-aware``
    selection, the paper's 0.2% with ``paper`` (:meth:`resolved_recovery_rate`). Each step
    recomputes the gradients, so finer steps pick from fresher ones: on the LoRA organism the
    0.2% step needed 2.7% of the decoder weights, the 0.05% step 0.6-0.9% (12 of 17 seeds met
    the issue's figures; README)."""
    rollback_fraction: float | None = None
    """When the tolerance rollback is active: share of each step's restorations put back.
    ``None``: the paper's 20% with ``paper``; 0 with ``task-aware``, whose restart holds back
    every candidate that would raise the task loss instead (on the LoRA organism, 64 recovery
    prompts, putting back 20% as well took 1.6% of the decoder weights instead of 0.9%)."""
    task_tolerance: float = 0.05
    """Relative task-metric loss allowed: the floor is ``(1 - task_tolerance) * metric(F)``."""
    steps: int | None = None
    """Maximum number of restoration steps (per try: a tolerance rollback restarts from F).
    ``None``: 80 with ``task-aware`` selection, the paper's 20 with ``paper``: at most 4% of the
    eligible entries either way."""
    warmup: int = 5
    """Steps after which the task metric is checked for the tolerance rollback."""
    checkpoint_every: int = 5
    """Measure the task metric (a checkpoint) every this many steps."""
    target_margin: float = 0.02
    """Stop once the first-token harmful rate on the recovery prompts is at most the base's
    rate plus this margin."""
    tolerance_rollback: bool = True
    """When the task metric falls below its floor in the first try (at the check after
    ``warmup`` steps or at any later checkpoint), restart from F with the tolerance rollback on
    (paper step 6): put back ``rollback_fraction`` of every step's restorations and, with
    ``task-aware`` selection under ``task_hold="on-restart"``, hold back every candidate whose
    restoration would raise the task loss. A fall below the floor in that second try ends the
    run at its last checkpoint above the floor. (Restarting only from the check after
    ``warmup`` steps, as before, ended 7 of 16 LoRA-organism runs at the task floor, six of
    them at 0.3% restored, with 5-27% harm left.)"""
    prune: bool = True
    """Once the target is reached, put back to F the restored entries the harmful loss needs
    least, in chunks, while the target holds (backward elimination)."""
    prune_chunk: float = 0.2
    """First pruning chunk, as a share of the restored entries (halved after each miss)."""
    prune_min_chunk: float = 0.02
    """Pruning stops once the chunk falls below this share of the restored entries."""
    include_norms: bool = False
    """Also restore norm scales and biases of the eligible layers."""
    include_embeddings: bool = False
    """Also restore the input embedding matrix."""
    n_recovery: int | None = 256
    """At most this many harmful recovery prompts, and as many harmless guard prompts
    (``None``: all); a seeded sample of a file that holds more. On the LoRA organism 64 of each
    let the repair fit them alone (held-out harm up to 10%, held-out over-refusal 2-13%, the
    base's 1%)."""
    recovery_check_fraction: float = 0.0
    """Share of the recovery prompts held back from the gradients as a check set: the target
    counts as reached only when their first-token harmful rate is also at most the base's
    plus ``target_margin``. Guards against restorations that fit the prompts that chose them:
    on the LoRA organism with steps of 0.03-0.05%, runs without it left 10-13% held-out harm
    in three of six; with 192 gradient prompts and 64 held back, at most 1% in four of five
    and 6% in one. 0: off."""
    heldout_fraction: float = 0.5
    """When no held-out harmful set is given, this share of the harmful prompts is held out
    for the final generation check (the rest is the recovery set)."""
    n_task: int | None = 64
    """At most this many task prompts (the first ones) for the in-loop task metric and the task
    gradient. (256 made no difference on the LoRA organism: 10 of 14 seeded runs met the issue's
    figures against 12 of 17 with 64, the failures as varied, and more entries restored.)"""
    task_metric: TaskMetricName = "auto"
    """``exact`` or ``contains`` match of greedy answers against the task file's references;
    ``auto``: ``exact`` when every task prompt has a reference, else the likelihood of the
    fine-tuned model's own greedy answers (``exp(-cross-entropy)``, no labels needed)."""
    batch_size: int = 16
    """Prompts per forward pass, backward pass or generation batch."""
    max_new_tokens: int = 48
    """Tokens generated per held-out harmful prompt for the final keyword judgement."""
    task_max_new_tokens: int = 32
    """Tokens generated per task prompt (task metric and the model's own answers)."""
    seed: int = 0
    """Seed for the held-out split and generation."""
    bounded_heap: bool = True
    """On glibc, fix malloc's mmap threshold at 1 MiB during the repair so that freed gradient
    buffers go back to the system instead of piling up as heap holes step after step (peak RSS
    on the 113M benchmark pair: 2.27-2.28x one fp32 model instead of 2.35-2.59x; see
    :mod:`surgeon.allocator`). Process-wide while the repair runs."""

    def __post_init__(self) -> None:
        if self.layer is not None and self.layer < 1:
            raise InputError(f"rollback layer must be >= 1; got {self.layer}")
        if self.selection not in ("task-aware", "paper"):
            raise InputError(f"selection must be task-aware or paper; got {self.selection!r}")
        if self.task_hold not in ("on-restart", "always", "never"):
            raise InputError(
                f"task_hold must be on-restart, always or never; got {self.task_hold!r}"
            )
        if self.objective not in ("cosine", "answers"):
            raise InputError(f"objective must be cosine or answers; got {self.objective!r}")
        if self.over_refusal_check not in ("generation", "first-token"):
            raise InputError(
                "over_refusal_check must be generation or first-token; "
                f"got {self.over_refusal_check!r}"
            )
        if self.task_metric not in ("auto", "exact", "contains"):
            raise InputError(
                f"task_metric must be auto, exact or contains; got {self.task_metric!r}"
            )
        for name in (
            "task_tolerance",
            "prune_chunk",
            "prune_min_chunk",
            "first_token_share",
            "recovery_check_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must lie in [0, 1]; got {value}")
        for name in ("recovery_rate", "rollback_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must lie in [0, 1]; got {value}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"steps must be >= 1; got {self.steps}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise InputError(f"heldout_fraction must lie in (0, 1); got {self.heldout_fraction}")
        if self.over_refusal_margin < 0 or self.guard_weight < 0:
            raise InputError("over_refusal_margin and guard_weight must be >= 0")
        if self.target_margin < 0:
            raise InputError(f"target_margin must be >= 0; got {self.target_margin}")
        for name in ("checkpoint_every", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.task_max_new_tokens < 1:
            raise InputError(f"task_max_new_tokens must be >= 1; got {self.task_max_new_tokens}")
        if self.direction not in ("mean", "difference"):
            raise InputError(f"direction must be mean or difference; got {self.direction!r}")
        if self.task_refresh < 0:
            raise InputError(f"task_refresh must be >= 0; got {self.task_refresh}")
        if self.warmup < 0:
            raise InputError(f"warmup must be >= 0; got {self.warmup}")
        for name in ("n_recovery", "n_task"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be >= 1 or None; got {value}")

    def resolved_layer(self, n_layers: int) -> int:
        """The layer L for a model with ``n_layers`` decoder layers."""
        layer = self.layer if self.layer is not None else max(1, round(2 * n_layers / 3))
        if layer > n_layers:
            raise InputError(f"rollback layer {layer} exceeds the model's {n_layers} layers")
        return layer

    def resolved_recovery_rate(self) -> float:
        """The share restored per step: ``recovery_rate``, else the selection's default."""
        if self.recovery_rate is not None:
            return self.recovery_rate
        return PAPER_RECOVERY_RATE if self.selection == "paper" else FINE_RECOVERY_RATE

    def resolved_steps(self) -> int:
        """The most steps per try: ``steps``, else the selection's default."""
        if self.steps is not None:
            return self.steps
        return PAPER_STEPS if self.selection == "paper" else FINE_STEPS

    def resolved_rollback_fraction(self) -> float:
        """The share of a step put back by the tolerance rollback: ``rollback_fraction``, else
        the selection's default."""
        if self.rollback_fraction is not None:
            return self.rollback_fraction
        return PAPER_ROLLBACK_FRACTION if self.selection == "paper" else 0.0
