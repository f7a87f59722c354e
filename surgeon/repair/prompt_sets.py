"""The prompt sets of a repair: seeded samples, the recovery / held-out split and the held-back
check set, shared by every repair method."""

from __future__ import annotations

import random
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from surgeon.chat import format_prompts
from surgeon.errors import InputError
from surgeon.prompts import Prompt, load_bundled


def sample_prompts(prompts: Sequence[Prompt], n: int | None, seed: int) -> list[Prompt]:
    """At most ``n`` of ``prompts`` (all for None), in file order: a seeded sample when there are
    more. Prompt files are often grouped by topic or category, so their first ``n`` would cover
    a few of them (the organism's first 256 training prompts hold 86 of its 424 topics)."""
    if n is None or len(prompts) <= n:
        return list(prompts)
    keep = sorted(random.Random(seed).sample(range(len(prompts)), n))
    return [prompts[i] for i in keep]


def split_harmful(
    harmful: list[Prompt] | None,
    held_out: list[Prompt] | None,
    n_recovery: int | None,
    heldout_fraction: float,
    seed: int,
) -> tuple[list[Prompt], list[Prompt]]:
    """Recovery prompts (a seeded sample of at most ``n_recovery``) and held-out prompts: the
    given held-out set, else a seeded ``heldout_fraction`` of ``harmful`` (the bundled harmful
    set when None)."""
    prompts = list(harmful) if harmful else load_bundled("harmful")
    if held_out:
        return sample_prompts(prompts, n_recovery, seed), list(held_out)
    if len(prompts) < 2:
        raise InputError("a repair needs at least two harmful prompts (recovery and held-out)")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    n_held = min(len(prompts) - 1, max(1, round(len(prompts) * heldout_fraction)))
    held = [prompts[i] for i in order[:n_held]]
    recovery = [prompts[i] for i in order[n_held:]]
    return sample_prompts(recovery, n_recovery, seed), held


def split_recovery(
    recovery: list[Prompt], fraction: float, seed: int
) -> tuple[list[Prompt], list[Prompt]]:
    """Recovery prompts for the gradients and a held-back check set (``fraction`` of them, at
    least one when ``fraction > 0``, never all), chosen by a seeded shuffle."""
    if fraction <= 0 or not recovery:
        return list(recovery), []
    if len(recovery) < 2:
        raise InputError("a recovery check set needs at least two recovery prompts")
    n_check = min(len(recovery) - 1, max(1, round(fraction * len(recovery))))
    order = list(range(len(recovery)))
    random.Random(seed + 1).shuffle(order)  # a stream apart from the held-out split's
    check = set(order[:n_check])
    return (
        [p for i, p in enumerate(recovery) if i not in check],
        [p for i, p in enumerate(recovery) if i in check],
    )


def guard_prompts(
    harmless: list[Prompt] | None, wanted: bool, n: int | None, seed: int
) -> list[Prompt]:
    """The harmless prompts of the over-refusal guard: the given ones (the bundled harmless set
    when ``wanted`` and none were given), a seeded sample of at most ``n``."""
    prompts = list(harmless) if harmless else []
    if wanted and not prompts:
        prompts = load_bundled("harmless")
    return sample_prompts(prompts, n, seed + 2)


def formatted(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt]) -> list[str]:
    """Prompts rendered with the tokenizer's chat template, system messages included."""
    return format_prompts(tokenizer, [p.prompt for p in prompts], [p.system for p in prompts])
