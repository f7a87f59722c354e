"""Mean-ablation of attention heads and the causal check of a localisation against random heads.

A head's output is its slice of the attention output projection's input (TransformerLens
``hook_z``; :class:`probes.heads.HeadLayout.head_slice`). Mean-ablating a head replaces that
slice, at every position of every forward (prompt and generated tokens alike), by its mean
over reference prompts: the head then carries no prompt-specific information while the rest
of the network still sees an activation of the usual size, unlike zero-ablation.

:func:`causal_check` asks whether the localised heads matter more than any heads: it measures
a metric unablated, with the focal heads ablated and with as many random heads ablated, over
seeded draws.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from probes.activations import forward_kwargs
from probes.heads import AttentionMap, find_attention
from surgeon.errors import RuntimeFailure
from surgeon.generation import model_device
from surgeon.progress import progress
from surgeon.tokens import encode

Positions = Literal["all", "last"]
Head = tuple[int, int]


@dataclass(frozen=True)
class HeadMeans:
    """Every head's mean output over reference prompts."""

    means: Float[Tensor, "n_layers n_heads head_dim"]
    """Mean of each head's slice of the output projection's input (float32, CPU)."""
    n_tokens: int
    """Token positions averaged (per head)."""
    positions: str
    """``all`` (every real token of every prompt) or ``last`` (the last prompt token)."""


@dataclass(frozen=True)
class CausalCheck:
    """A metric unablated, with the focal heads mean-ablated and with random heads ablated."""

    metric: str
    """Name of the measured quantity (e.g. ``violation_rate``)."""
    baseline: float
    """The metric with nothing ablated."""
    focal_value: float
    """The metric with the focal heads ablated."""
    focal: float
    """Change of the metric when the focal heads are ablated (``focal_value - baseline``)."""
    random_changes: tuple[float, ...]
    """Change of the metric for each random draw."""
    random_mean: float
    """Mean change over the random draws."""
    random_std: float
    """Sample standard deviation (n - 1) of the random draws' changes."""
    draws: int
    """Number of random draws."""
    heads: tuple[Head, ...]
    """The focal heads that were ablated."""
    random_heads: tuple[tuple[Head, ...], ...]
    """The heads of each random draw."""
    min_change: float
    """The smallest |focal change| that can count (the metric's resolution, e.g. 1/n)."""
    valid: bool
    """The localisation beats random heads: ``|focal| > |random_mean| + 2 * random_std`` and
    ``|focal| > min_change``. Two standard deviations of the draws put the focal change
    outside the spread that same-sized random sets reach, not only above their mean; the
    absolute values make the test direction-free (ablation may raise or lower a metric)."""

    def to_json(self) -> dict[str, Any]:
        """The report keys of conventions.md (``focal.causal``) plus the detail."""
        return {
            "metric": self.metric,
            "focal": self.focal,
            "random_mean": self.random_mean,
            "random_std": self.random_std,
            "draws": self.draws,
            "valid": self.valid,
            "baseline": self.baseline,
            "focal_value": self.focal_value,
            "random_changes": list(self.random_changes),
            "heads": [list(h) for h in self.heads],
            "random_heads": [[list(h) for h in draw] for draw in self.random_heads],
            "min_change": self.min_change,
        }


def _check_heads(amap: AttentionMap, heads: Iterable[Head]) -> list[Head]:
    out = []
    for layer, head in heads:
        if not 0 <= layer < amap.n_layers or not 0 <= head < amap.n_heads:
            raise ValueError(
                f"head ({layer}, {head}) is outside the model's {amap.n_layers} layers x "
                f"{amap.n_heads} heads"
            )
        out.append((int(layer), int(head)))
    return out


def _input_of(args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> Tensor:
    if args and isinstance(args[0], Tensor):
        return args[0]
    raise RuntimeFailure(f"{name} was called without a positional input tensor; cannot hook it")


@torch.no_grad()
def head_means(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    positions: Positions = "all",
    batch_size: int = 16,
) -> HeadMeans:
    """Mean output of every head over formatted prompts ``texts`` (normal prompts, usually).

    ``positions``: ``all`` averages every real (non-padding) token, the positions an ablation
    during generation replaces; ``last`` only the last prompt token.
    """
    if positions not in ("all", "last"):
        raise ValueError(f"positions must be 'all' or 'last', got {positions!r}")
    if not texts:
        raise ValueError("head_means needs at least one prompt")
    amap = find_attention(model)
    lay = amap.layout
    width = lay.n_heads * lay.head_dim
    sums = torch.zeros(amap.n_layers, width, dtype=torch.float64)
    count = 0
    current: dict[str, Tensor] = {}

    def make_hook(i: int) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = _input_of(args, kwargs, amap.sites[i].o_proj)
            mask = current["mask"].to(x.device).bool()
            picked = x[:, -1, :] if positions == "last" else x[mask]
            sums[i] += picked.double().sum(0).cpu()

        return hook

    device = model_device(model)
    extra = forward_kwargs(model)
    handles = []
    was_training = model.training
    model.eval()
    try:
        for i, site in enumerate(amap.sites):
            handles.append(
                site.output_projection.register_forward_pre_hook(make_hook(i), with_kwargs=True)
            )
        batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        for batch in progress(batches, desc="head means"):
            enc = encode(tokenizer, batch, device)
            current["mask"] = enc["attention_mask"]
            model(**enc, use_cache=False, **extra)
            count += len(batch) if positions == "last" else int(enc["attention_mask"].sum())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    means = (sums / count).float().view(amap.n_layers, lay.n_heads, lay.head_dim)
    return HeadMeans(means=means, n_tokens=count, positions=positions)


@contextmanager
def ablate_heads(model: nn.Module, heads: Iterable[Head], means: HeadMeans) -> Iterator[None]:
    """Replace the outputs of ``heads`` ((layer, query head) pairs) by ``means`` in the block.

    Pre-hooks on the output projections of the affected layers overwrite each head's input
    slice at every position; they are removed when the block exits, also on an exception.
    An empty ``heads`` changes nothing.
    """
    amap = find_attention(model)
    chosen = _check_heads(amap, heads)
    lay = amap.layout
    if tuple(means.means.shape) != (amap.n_layers, lay.n_heads, lay.head_dim):
        raise ValueError(
            f"means have shape {tuple(means.means.shape)}, the model's heads "
            f"{(amap.n_layers, lay.n_heads, lay.head_dim)}"
        )
    by_layer: dict[int, list[int]] = {}
    for layer, head in chosen:
        by_layer.setdefault(layer, []).append(head)

    def make_hook(layer: int, hs: list[int]) -> Callable[..., Any]:
        channels = torch.cat([torch.arange(lay.head_dim) + h * lay.head_dim for h in hs])
        values = torch.cat([means.means[layer, h] for h in hs])

        def hook(
            _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            x = _input_of(args, kwargs, amap.sites[layer].o_proj).clone()
            x[..., channels.to(x.device)] = values.to(device=x.device, dtype=x.dtype)
            return (x, *args[1:]), kwargs

        return hook

    handles = []
    try:
        for layer, hs in sorted(by_layer.items()):
            module = amap.sites[layer].output_projection
            handles.append(module.register_forward_pre_hook(make_hook(layer, hs), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def random_head_sets(
    all_heads: Sequence[Head],
    k: int,
    draws: int,
    seed: int = 0,
    exclude: Iterable[Head] = (),
) -> list[tuple[Head, ...]]:
    """``draws`` seeded sets of ``k`` distinct heads from ``all_heads`` minus ``exclude``."""
    excluded = set(exclude)
    pool = [h for h in all_heads if h not in excluded]
    if k > len(pool):
        raise ValueError(
            f"cannot draw {k} random heads from the {len(pool)} heads outside the focal set; "
            "choose fewer focal heads"
        )
    rng = random.Random(seed)
    return [tuple(sorted(rng.sample(pool, k))) for _ in range(draws)]


def causal_check(
    model: nn.Module,
    heads: Sequence[Head],
    means: HeadMeans,
    measure: Callable[[], float],
    *,
    metric: str = "violation_rate",
    draws: int = 5,
    seed: int = 0,
    exclude_focal: bool = True,
    min_change: float = 0.0,
    baseline: float | None = None,
) -> CausalCheck:
    """Measure ``measure()`` unablated, with ``heads`` mean-ablated, and with random heads.

    The random sets have as many heads as ``heads``, drawn (seeded) from the heads outside
    the focal set (``exclude_focal``, so a random set cannot share the focal heads' effect) or
    from all heads. ``measure`` reads the model as it is when called (the ablation hooks are
    in place); the caller passes e.g. the conflict violation rate by generation.
    ``baseline``: the unablated metric when the caller has already measured it.
    """
    if draws < 5:
        raise ValueError(f"the causal check needs at least 5 random draws, got {draws}")
    if not heads:
        raise ValueError("the causal check needs at least one focal head")
    amap = find_attention(model)
    focal = _check_heads(amap, heads)
    sets = random_head_sets(
        amap.all_heads(), len(focal), draws, seed, exclude=focal if exclude_focal else ()
    )
    baseline = float(measure()) if baseline is None else baseline
    with ablate_heads(model, focal, means):
        focal_value = float(measure())
    changes = []
    for chosen in sets:
        with ablate_heads(model, chosen, means):
            changes.append(float(measure()) - baseline)
    focal_change = focal_value - baseline
    r_mean = statistics.fmean(changes)
    r_std = statistics.stdev(changes)
    valid = abs(focal_change) > max(min_change, abs(r_mean) + 2 * r_std)
    return CausalCheck(
        metric=metric,
        baseline=baseline,
        focal_value=focal_value,
        focal=focal_change,
        random_changes=tuple(changes),
        random_mean=r_mean,
        random_std=r_std,
        draws=draws,
        heads=tuple(focal),
        random_heads=tuple(sets),
        min_change=min_change,
        valid=valid,
    )
