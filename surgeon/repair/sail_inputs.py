"""The prompt sets of a SAIL repair: which conflicts train, which check the early stop, which
measure before and after (held-out, never in training); and the harmful and harmless ones.

Conflicts come from ``--conflicts`` (a conflicts ``.jsonl``, or a model organism's
``prompts/`` directory, whose ``train`` split trains and ``heldout`` split measures) or the
bundled set; a file without a held-out split (``--conflicts-heldout``) is split by a seeded
shuffle. The check split is a seeded share of the training prompts, held back from the pairs. For
``--target harmful`` the guard pairs' harmless prompts are ``harmless_train``, else a seeded
share of the harmless pool, disjoint from the over-refusal's prompts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from surgeon.conflicts import ConflictItem, bundled_conflicts
from surgeon.errors import InputError
from surgeon.prompts import Prompt, load_bundled
from surgeon.repair.prompt_sets import sample_prompts, split_harmful, split_recovery
from surgeon.repair.sail_config import SailConfig

T = TypeVar("T")


def held_back(items: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """The rest and a seeded ``fraction`` of ``items`` (at least one when ``fraction > 0`` and
    there are two or more, never all)."""
    if fraction <= 0 or len(items) < 2:
        return list(items), []
    n = min(len(items) - 1, max(1, round(fraction * len(items))))
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    chosen = set(order[:n])
    return (
        [x for i, x in enumerate(items) if i not in chosen],
        [x for i, x in enumerate(items) if i in chosen],
    )


def sample(items: Sequence[T], n: int | None, seed: int) -> list[T]:
    """At most ``n`` of ``items`` in their order (a seeded sample when there are more)."""
    if n is None or len(items) <= n:
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


@dataclass(frozen=True)
class SailInputs:
    """Every prompt set of one repair."""

    train_conflicts: tuple[ConflictItem, ...]
    """Conflicts that build pairs (``conflict``) and feed the focal probe."""
    check_conflicts: tuple[ConflictItem, ...]
    """Training conflicts held back for the early stop (``conflict``)."""
    heldout_conflicts: tuple[ConflictItem, ...]
    """Held-out conflicts of the before/after measurement."""
    train_harmful: tuple[Prompt, ...]
    """Harmful recovery prompts that build refusal pairs (``harmful``)."""
    check_harmful: tuple[Prompt, ...]
    """Recovery prompts held back for the early stop (``harmful``)."""
    heldout_harmful: tuple[Prompt, ...]
    """Held-out harmful prompts of the before/after harmful rate."""
    harmless: tuple[Prompt, ...]
    """Harmless prompts of the before/after over-refusal."""
    train_harmless: tuple[Prompt, ...]
    """Harmless prompts of the guard pairs (``harmful``: keep answering them)."""
    task: tuple[Prompt, ...]
    """Task prompts with references (empty: no task metric)."""


def sail_inputs(
    config: SailConfig,
    *,
    conflicts: Sequence[ConflictItem] | None = None,
    conflicts_heldout: Sequence[ConflictItem] | None = None,
    harmful: Sequence[Prompt] | None = None,
    harmful_heldout: Sequence[Prompt] | None = None,
    harmless: Sequence[Prompt] | None = None,
    harmless_train: Sequence[Prompt] | None = None,
    task: Sequence[Prompt] | None = None,
) -> SailInputs:
    """Split and sample the given sets (bundled ones where None), seeded by ``config.seed``."""
    seed = config.seed
    train = list(conflicts) if conflicts else bundled_conflicts()
    if conflicts_heldout:
        heldout = list(conflicts_heldout)
    else:
        train, heldout = held_back(train, config.heldout_fraction, seed)
        if not heldout:
            raise InputError(
                "SAIL needs held-out conflicts: give --conflicts-heldout or more items"
            )
    train, check = held_back(train, config.check_fraction, seed + 1)
    train = sample(train, config.n_train, seed)
    pool = list(harmless or load_bundled("harmless"))
    guard: list[Prompt] = []
    if config.target == "harmful":
        if harmless_train:
            guard = list(harmless_train)
        else:  # the guard's prompts and the over-refusal's never overlap
            guard, pool = held_back(pool, config.heldout_fraction, seed + 2)
        recovery, held = split_harmful(
            list(harmful) if harmful else None,
            list(harmful_heldout) if harmful_heldout else None,
            config.n_train,
            config.heldout_fraction,
            seed,
        )
        recovery, check_harm = split_recovery(recovery, config.check_fraction, seed)
    else:
        recovery, check_harm = [], []
        held = list(harmful_heldout or harmful or load_bundled("harmful"))
    return SailInputs(
        train_conflicts=tuple(train),
        check_conflicts=tuple(check),
        heldout_conflicts=tuple(heldout),
        train_harmful=tuple(recovery),
        check_harmful=tuple(check_harm),
        heldout_harmful=tuple(sample_prompts(held, config.n_eval, seed)),
        harmless=tuple(sample_prompts(pool, config.n_eval, seed + 2)),
        train_harmless=tuple(sample_prompts(guard, config.n_train, seed + 3)),
        task=tuple(task or ()),
    )
