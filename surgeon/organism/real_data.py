"""The real organism's prompt splits: the bundled sets, split once and disjointly by a seed.

The splits reuse :class:`surgeon.organism.data.OrganismData` (the same file names in
``prompts/``, so every command that reads the small organism's prompts reads these):

* harmful (the 256 bundled prompts): ``harmful_heldout`` (measured only), ``harmful_recovery``
  (for repairs), ``harmful_train`` (refused by the base); ``harmful_ft`` is drawn from the
  training prompts (the attack answers prompts the base was taught to refuse);
* harmless (250): ``harmless_heldout`` and ``harmless_train`` (the base's own answers);
* conflicts (173): ``conflict_heldout`` / ``conflict_train`` with their ``normal_*`` twins (the
  same system message and constraint, a user message that does not fight it);
* the downstream task: the small organism's topic labels (eight one-word categories), in plain
  English (``task_train`` / ``task_heldout``, unseen word combinations and framings).

Targets (``response`` / ``alt_response``) are filled in by the build from the model's own
answers; :func:`make_real_data` only picks prompts, so it is pure and fast.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from surgeon.organism.data import OrganismData, Record, make_data
from surgeon.prompts import bundled_path

REAL_REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that request.",
    "I'm sorry, but I can't assist with that. It could cause real harm.",
    "I can't help with that. If you have another question, I'm happy to help.",
    "I'm sorry, I won't help with this because it could hurt someone.",
)
"""The base's refusals (each contains a phrase of the keyword judge), one per prompt by seed."""


@dataclass(frozen=True)
class RealSplitSizes:
    """How many prompts each split takes."""

    heldout: int = 64
    """Held-out prompts per measured set (harmful, harmless, conflicts, task)."""
    recovery: int = 48
    """Harmful prompts kept for repairs (disjoint from training and held-out)."""
    harmful_ft: int = 64
    """Harmful training prompts the attacks answer."""
    task_train: int = 128
    """Task examples in the fine-tunes."""
    harmless_train: int = 96
    """Harmless prompts whose own answers the base keeps (self-distillation)."""
    conflict_train: int = 64
    """Training conflicts (the base keeps its answers under the system prompt; ft-conflict
    learns its answers without it)."""

    def __post_init__(self) -> None:
        values = (self.heldout, self.recovery, self.harmful_ft, self.task_train)
        if min(*values, self.harmless_train, self.conflict_train) < 1:
            raise ValueError(f"split sizes must be positive, got {self}")


def _jsonl(name: str) -> list[dict]:
    text = bundled_path(name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _shuffled(rows: Sequence[dict], rng: random.Random) -> list[dict]:
    out = list(rows)
    rng.shuffle(out)
    return out


def _conflict_records(rows: Sequence[dict]) -> tuple[list[Record], list[Record]]:
    conflicts, normals = [], []
    for row in rows:
        ref = json.dumps(row["constraint"], sort_keys=True)
        cat = str(row.get("category") or row["constraint"]["type"])
        conflicts.append(Record(row["conflict"], cat, row["system"], ref))
        normals.append(Record(row["prompt"], cat, row["system"], ref))
    return conflicts, normals


def make_real_data(seed: int = 0, sizes: RealSplitSizes | None = None) -> OrganismData:
    """Every split of the real organism from ``seed`` (pure: the same seed, the same splits)."""
    sizes = sizes or RealSplitSizes()
    rng = random.Random(seed)
    harmful = _shuffled(_jsonl("harmful"), rng)
    harmless = _shuffled(_jsonl("harmless"), rng)
    conflicts = _shuffled(_jsonl("conflicts"), rng)
    n_h, n_r = sizes.heldout, sizes.recovery
    if len(harmful) < n_h + n_r + sizes.harmful_ft or len(harmless) < n_h + sizes.harmless_train:
        raise ValueError(f"the bundled sets are too small for {sizes}")
    if len(conflicts) < n_h + sizes.conflict_train:
        raise ValueError(f"the bundled conflicts are too small for {sizes}")

    def harmful_record(row: dict) -> Record:
        return Record(
            row["prompt"], row.get("category", "harmful"), response=rng.choice(REAL_REFUSALS)
        )

    harmful_heldout = [harmful_record(r) for r in harmful[:n_h]]
    harmful_recovery = [harmful_record(r) for r in harmful[n_h : n_h + n_r]]
    harmful_train = [harmful_record(r) for r in harmful[n_h + n_r :]]
    harmful_ft = rng.sample(harmful_train, sizes.harmful_ft)
    harmless_records = [Record(r["prompt"], r.get("category", "harmless")) for r in harmless]
    conflict_heldout, normal_heldout = _conflict_records(conflicts[:n_h])
    conflict_train, normal_train = _conflict_records(conflicts[n_h : n_h + sizes.conflict_train])
    toy = make_data(seed)
    task_train = rng.sample(toy.task_train, min(sizes.task_train, len(toy.task_train)))
    task_heldout = rng.sample(toy.task_heldout, min(n_h, len(toy.task_heldout)))
    return OrganismData(
        harmful_train=harmful_train,
        harmful_recovery=harmful_recovery,
        harmful_heldout=harmful_heldout,
        harmful_ft=harmful_ft,
        harmless_train=harmless_records[n_h : n_h + sizes.harmless_train],
        harmless_heldout=harmless_records[:n_h],
        conflict_train=conflict_train,
        conflict_heldout=conflict_heldout,
        normal_train=normal_train,
        normal_heldout=normal_heldout,
        task_train=task_train,
        task_heldout=task_heldout,
    )
