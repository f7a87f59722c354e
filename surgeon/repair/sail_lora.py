"""Where SAIL's LoRA goes and what the reference policy says about each pair.

Placement: PEFT ``LoraConfig`` (published r=8, alpha=16, dropout 0) on the q/k/v/o projections
of the focal layers only, named by :func:`probes.heads.find_attention` from the module tree
(fused projections once), so every supported architecture gets the same placement. The focal
layers are given (``--focal-layers 3,4``) or found by the focal-head probe on the model with
the conflict set's training split (``auto``).

Reference pass: the reference policy is the model itself with the adapter disabled
(``PeftModel.disable_adapter``), no second copy. One no-grad pass over the pairs, before the
first step, gives each response token's reference log-probability and, for ``attention``
weights, the focal heads' attention to the system span at the position that predicts it
(eager attention for that pass only; hooks removed in ``finally``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from probes.focal import FocalConfig, FocalHead, eager_attention, focal_probe
from probes.heads import AttentionSite, find_attention
from surgeon.conflicts import ConflictItem
from surgeon.errors import InputError, RuntimeFailure
from surgeon.progress import progress
from surgeon.repair.sail_data import EncodedPair, collate
from surgeon.repair.sail_loss import token_logps
from surgeon.tokens import pad_token_id


@dataclass(frozen=True)
class Placement:
    """The focal heads and layers, and the LoRA target modules on them."""

    layers: tuple[int, ...]
    """Focal layers (0-based), ascending."""
    heads: tuple[FocalHead, ...]
    """Focal heads whose attention weights the tokens (every head of a given layer when the
    layers were given)."""
    source: str
    """``probe`` (found by the focal probe) or ``given``."""
    target_modules: tuple[str, ...]
    """PEFT target module names (q/k/v/o of the focal layers)."""


def parse_layers(text: str, n_layers: int) -> tuple[int, ...] | None:
    """``auto`` -> None; ``"3,4"`` -> (3, 4); :class:`InputError` for anything else."""
    text = text.strip()
    if text == "auto":
        return None
    try:
        layers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise InputError(
            f"--focal-layers must be auto or layer numbers like 3,4; got {text!r}"
        ) from None
    if not layers:
        raise InputError("--focal-layers names no layer")
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise InputError(f"--focal-layers {bad[0]}: the model has decoder layers 0..{n_layers - 1}")
    return tuple(layers)


def place(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    focal_layers: str,
    items: Sequence[ConflictItem],
    probe: FocalConfig,
) -> Placement:
    """The focal layers (given, or by the focal probe on ``items``) and their LoRA targets."""
    attention = find_attention(model)
    layers = parse_layers(focal_layers, attention.n_layers)
    if layers is None:
        if not items:
            raise InputError("--focal-layers auto needs conflict items to run the focal probe")
        result = focal_probe(model, tokenizer, items, probe)
        heads, layers, source = result.heads, result.layers, "probe"
    else:
        heads = tuple(FocalHead(la, h, 1.0) for la in layers for h in range(attention.n_heads))
        source = "given"
    targets = tuple(attention.target_modules(layers))
    return Placement(tuple(layers), tuple(heads), source, targets)


def attach_lora(
    model: PreTrainedModel, placement: Placement, r: int, alpha: int, dropout: float
) -> PeftModel:
    """The model wrapped with a fresh LoRA adapter on the placement's modules only (every
    other parameter frozen)."""
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(placement.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)  # type: ignore[return-value]


def trainable_parameters(model: nn.Module) -> int:
    """Entries of the parameters that require gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def system_attention(
    sites: Sequence[AttentionSite], heads: Sequence[FocalHead], store: list[Tensor]
) -> Iterator[Callable[[Tensor], None]]:
    """Hooks on the focal layers' attention that add each forward's focal-head attention to
    the system span into ``store[0]`` (``[rows, queries]``: the mean over the focal heads).
    Yields the setter of the next batch's system-key mask, which also zeroes ``store[0]``.
    Needs eager attention."""
    by_layer: dict[int, list[int]] = {}
    for h in heads:
        by_layer.setdefault(h.layer, []).append(h.head)
    keys: dict[str, Tensor] = {}
    n_heads = max(len(heads), 1)

    def make_hook(layer: int, chosen: list[int]) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if not isinstance(weights, Tensor) or weights.ndim != 4:
                raise RuntimeFailure(
                    f"attention of layer {layer} returned no attention probabilities; eager "
                    "attention is not in effect"
                )
            mask = keys["system"].to(weights.dtype)[:, None, None, :]
            store[0] = store[0] + (weights[:, chosen].float() * mask).sum(-1).sum(1) / n_heads

        return hook

    handles = []
    try:
        for layer, chosen in sorted(by_layer.items()):
            handles.append(sites[layer].module.register_forward_hook(make_hook(layer, chosen)))

        def set_keys(mask: Tensor) -> None:
            keys["system"] = mask
            store[:] = [torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)]

        yield set_keys
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class ReferenceTokens:
    """What the reference policy gives each pair, per response token (response order)."""

    chosen_logps: tuple[Tensor, ...]
    """Reference log-probabilities of each chosen response's tokens."""
    rejected_logps: tuple[Tensor, ...]
    """The same for the rejected responses."""
    chosen_mass: tuple[Tensor, ...] | None
    """Focal-head attention to the system span when predicting each chosen token (None
    unless measured)."""
    rejected_mass: tuple[Tensor, ...] | None
    """The same for the rejected tokens."""


def _split_rows(grid: Tensor, mask: Tensor) -> list[Tensor]:
    return [grid[i][mask[i]].cpu() for i in range(grid.shape[0])]


@torch.no_grad()
def reference_tokens(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[EncodedPair],
    *,
    heads: Sequence[FocalHead] | None,
    batch_size: int,
    disable_adapter: bool = True,
    desc: str = "reference pass",
) -> ReferenceTokens:
    """Reference log-probs (and, with ``heads``, focal system attention) of every pair.

    ``model``: a ``PeftModel`` whose adapter is disabled for the pass (``disable_adapter``),
    or any causal LM (the aligned base, for ``reference`` weights).
    """
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    sites = find_attention(model).sites if heads else ()
    out: dict[str, list[Tensor]] = {"c": [], "r": [], "mc": [], "mr": []}
    off = model.disable_adapter() if disable_adapter and isinstance(model, PeftModel) else None
    was_training = model.training
    model.eval()
    store: list[Tensor] = []
    try:
        with (
            off if off is not None else nullcontext(),
            eager_attention(model) if heads else nullcontext(),
            system_attention(sites, heads or (), store) as set_keys,
        ):
            for start in progress(range(0, len(pairs), batch_size), desc=desc):
                chunk = pairs[start : start + batch_size]
                batch = collate(chunk, pad, device)
                set_keys(batch.system_keys)
                logits = model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    use_cache=False,
                ).logits
                logps = _split_rows(
                    token_logps(logits, batch.input_ids, batch.target_mask), batch.target_mask
                )
                n = len(chunk)
                out["c"] += logps[:n]
                out["r"] += logps[n:]
                if heads:
                    mass = _split_rows(store[0][:, :-1], batch.target_mask)
                    out["mc"] += mass[:n]
                    out["mr"] += mass[n:]
    finally:
        model.train(was_training)
    return ReferenceTokens(
        tuple(out["c"]),
        tuple(out["r"]),
        tuple(out["mc"]) if heads else None,
        tuple(out["mr"]) if heads else None,
    )
