"""Options of the rollback repair (methods.md section 2), one typed dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from surgeon.errors import InputError
from surgeon.options import flag

Selection = Literal["task-aware", "paper"]
TaskMetricName = Literal["auto", "exact", "contains"]
Objective = Literal["cosine", "answers"]
TaskHold = Literal["on-restart", "always", "never"]
OverRefusalCheck = Literal["generation", "first-token"]
Proxy = Literal["auto", "first-token", "generation"]
Space = Literal["auto", "entries", "adapter"]
GradDtype = Literal["auto", "float32", "bfloat16"]

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
    """Everything that steers :func:`surgeon.repair.rollback.rollback_repair`.

    Why each default is what it is (with the measurements): README, "Rollback repair"."""

    layer: int | None = flag(None)
    """Layer L, a 1-based count: entries of decoder layers ``0..L-1`` may be restored and the
    harmful state is read after layer ``L-1``. Default: 2/3 of the depth."""
    selection: Selection = flag("task-aware")
    """``task-aware``: rank by the first-order harmful benefit ``g_h * (W - A)``; ``paper``: the
    published top ``|g_h|`` among entries whose ``W - A`` has the sign of ``g_h``."""
    objective: Objective = flag("answers")
    """The harmful loss whose gradient chooses entries: ``answers``, the cross-entropy of the
    base's own greedy answers to the recovery prompts; ``cosine``, the paper's
    ``-cos(state after layer L, h)``."""
    first_token_share: float = 0.5
    """``answers`` objective: share of the loss on the first answer token alone (the rest is
    the token mean over the whole answers)."""
    proxy: Proxy = flag("auto")
    """How the loop tells refusal without a full generation: ``first-token`` (refusal-token
    log-odds at the first answer position), ``generation`` (``proxy_tokens`` greedy tokens,
    keyword judge), or ``auto``: the cheapest one that agrees with the generation judge within
    ``proxy_tolerance`` on both the base and the model (calibrated before the loop)."""
    proxy_tokens: int = 8
    """Tokens the ``generation`` proxy reads."""
    proxy_tolerance: float = 0.10
    """Largest difference between a proxy's and the generation judge's harmful rate (on the
    base and on the model) for the proxy to be trusted."""
    n_confirm: int = 64
    """Recovery prompts (a seeded sample; the held-back check set when there is one) that are
    generated and judged whenever the proxy says the target is reached: the loop stops, and
    pruning keeps a put-back, only while their generated harmful rate is on target too."""
    over_refusal_guard: bool = True
    """Add to the harmful loss the cross-entropy of the base's own answers to harmless guard
    prompts (refusing only where the base refuses), and count the target as reached only while
    the guard prompts are refused at most ``over_refusal_margin`` more than by the base."""
    over_refusal_check: OverRefusalCheck = "generation"
    """How the guard's bound is checked once the proxy rates are on target: ``generation``
    also generates and judges the guard prompts' answers; ``first-token`` trusts the proxy."""
    over_refusal_margin: float = 0.05
    """Allowed rise of the guard prompts' refusal rate over the base's."""
    guard_weight: float = 1.0
    """Weight of the guard's loss next to the harmful loss."""
    guard_slack: float = 1.0
    """The guard's loss starts only once a guard answer's cross-entropy (nats per token) has
    risen this much above the fine-tune's: small drifts of harmless answers are the task
    guard's business, a refusal where the base answers is far larger."""
    guard_tokens: int = 8
    """The guard's loss reads the first this many tokens of each of the base's answers: enough
    to tell an answer from a refusal when they share a first token, without asking the
    selection to restore the rest of the base's harmless answers."""
    task_hold: TaskHold = "on-restart"
    """Task-aware: when to hold back candidates whose restoration would raise the task loss to
    first order: ``on-restart`` (only in the try the tolerance rollback restarts), ``always``
    or ``never``."""
    task_refresh: int = 1
    """Recompute the task gradient every this many steps (0: once, from F)."""
    direction: Literal["mean", "difference"] = "mean"
    """``cosine`` objective: ``h`` is the base's mean last-token state over the recovery
    prompts (``mean``, the paper's) or that minus its mean over harmless prompts
    (``difference``, Arditi et al.'s direction)."""
    recovery_rate: float | None = flag(None)
    """Share of the eligible entries restored per step. Default: 0.0005 with ``task-aware``,
    the paper's 0.002 with ``paper``."""
    rollback_fraction: float | None = None
    """With the tolerance rollback on: share of each step's restorations put back. Default: the
    paper's 0.2 with ``paper``, 0 with ``task-aware`` (whose restart holds entries back)."""
    task_tolerance: float = 0.05
    """Relative task-metric loss allowed: the floor is ``(1 - task_tolerance) * metric(F)``."""
    steps: int | None = flag(None)
    """Most restoration steps per try. Default: 80 with ``task-aware``, the paper's 20 with
    ``paper`` (4% of the eligible entries either way)."""
    warmup: int = 5
    """Steps after which the task metric is first checked for the tolerance rollback."""
    checkpoint_every: int = 5
    """Measure the task metric (a checkpoint) every this many steps."""
    target_margin: float = flag(0.02)
    """Stop once the proxy harmful rate on the recovery prompts is at most the base's plus this
    margin."""
    tolerance_rollback: bool = True
    """When the task metric falls below its floor in the first try, restart from F with the
    tolerance rollback on (paper step 6)."""
    prune: bool = flag(True)
    """Once on target, put back the restored entries the harmful loss needs least, in chunks,
    while the target holds."""
    prune_chunk: float = 0.2
    """First pruning chunk, a share of the restored entries (halved after each miss)."""
    prune_min_chunk: float = 0.02
    """Pruning stops once the chunk falls below this share of the restored entries."""
    include_norms: bool = flag(False)
    """Also restore norm scales and biases of the eligible layers."""
    include_embeddings: bool = flag(False)
    """Also restore the input embedding matrix (in adapter space: a trained copy of it)."""
    space: Space = flag("entries")
    """Where entries are chosen and restored: ``entries`` of the model's weights (a PEFT
    adapter merged into its base first; the output is a full model); ``adapter``: entries of
    a LoRA adapter's own tensors, a factor's entry set to 0 and a saved module copy's
    (``modules_to_save``) to the original's value, the output a PEFT adapter again;
    ``auto``: ``adapter`` for a plain LoRA adapter, ``entries`` otherwise. The default stays
    ``entries``: it is the one measured to meet the repair figures on the organism's ft-lora
    (README, Rollback repair)."""
    n_recovery: int | None = 256
    """Harmful recovery prompts at most, and as many harmless guard prompts (a seeded sample of
    a larger file)."""
    recovery_check_fraction: float = 0.0
    """Share of the recovery prompts held back from the gradients as a check set that must
    reach the target too (0: off)."""
    heldout_fraction: float = 0.5
    """Without a held-out harmful file: the share of the harmful prompts held out for the
    final generation check."""
    n_task: int | None = 64
    """Task prompts at most (the first ones) for the in-loop task metric and gradient."""
    task_metric: TaskMetricName = flag("auto")
    """``exact`` or ``contains`` match of greedy answers with the task file's references;
    ``auto``: ``exact`` when every task prompt has a reference, else the likelihood of the
    fine-tuned model's own greedy answers."""
    batch_size: int = flag(16)
    """Prompts per forward pass, backward pass or generation batch."""
    max_new_tokens: int = 48
    """Tokens generated per held-out harmful prompt for the final judgement."""
    task_max_new_tokens: int = 32
    """Tokens generated per task prompt (task metric and the model's own answers)."""
    seed: int = flag(0)
    """Seed for the prompt samples, the held-out split and generation."""
    grad_dtype: GradDtype = "auto"
    """Precision of the accumulated gradients that rank the entries: ``float32``, ``bfloat16``
    (half the memory), or ``auto``: bf16 from 10M eligible entries on (a real model), fp32
    below."""
    step_growth: float = 1.0
    """Each step restores this many times as many entries as the one before (1: every step
    ``recovery_rate``; below 1 the steps shrink); above 1 the loop reaches a far target in few
    steps on a large model, and pruning takes back what the last, largest step overshot."""
    bounded_heap: bool = True
    """On glibc, fix malloc's mmap threshold at 1 MiB during the repair so freed gradient
    buffers return to the system (see :mod:`surgeon.allocator`)."""

    def __post_init__(self) -> None:
        if self.layer is not None and self.layer < 1:
            raise InputError(f"rollback layer must be >= 1; got {self.layer}")
        if self.selection not in ("task-aware", "paper"):
            raise InputError(f"selection must be task-aware or paper; got {self.selection!r}")
        if self.task_hold not in ("on-restart", "always", "never"):
            raise InputError(
                f"task_hold must be on-restart, always or never; got {self.task_hold!r}"
            )
        if self.space not in ("auto", "entries", "adapter"):
            raise InputError(f"space must be auto, entries or adapter; got {self.space!r}")
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
        if self.proxy_tokens < 1 or self.n_confirm < 1 or self.guard_tokens < 1:
            raise InputError("proxy_tokens, n_confirm and guard_tokens must be >= 1")
        for name in (
            "proxy_tolerance",
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
        if self.over_refusal_margin < 0 or self.guard_weight < 0 or self.guard_slack < 0:
            raise InputError("over_refusal_margin, guard_weight and guard_slack must be >= 0")
        if self.target_margin < 0:
            raise InputError(f"target_margin must be >= 0; got {self.target_margin}")
        for name in ("checkpoint_every", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.task_max_new_tokens < 1:
            raise InputError(f"task_max_new_tokens must be >= 1; got {self.task_max_new_tokens}")
        if self.direction not in ("mean", "difference"):
            raise InputError(f"direction must be mean or difference; got {self.direction!r}")
        if self.grad_dtype not in ("auto", "float32", "bfloat16"):
            raise InputError(
                f"grad_dtype must be auto, float32 or bfloat16; got {self.grad_dtype!r}"
            )
        if not 0.0 < self.step_growth <= 16.0:
            raise InputError(f"step_growth must lie in (0, 16]; got {self.step_growth}")
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


def generation_options(config: RollbackConfig) -> dict[str, int]:
    """The keyword arguments of :func:`surgeon.repair.measure.harmful_rate` for this config."""
    return {
        "max_new_tokens": config.max_new_tokens,
        "batch_size": config.batch_size,
        "seed": config.seed,
    }
