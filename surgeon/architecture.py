"""Find layers, heads and the residual stream from the config and the module tree.

Never from the model's name: the decoder layers are the ``ModuleList`` whose length equals the
config's layer count (as EleutherAI/sparsify's ``get_layer_list`` does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from surgeon.errors import InputError


def text_config(config: Any) -> Any:
    """The language-model part of a config (multimodal configs nest it as ``text_config``)."""
    return getattr(config, "text_config", None) or config


def _first_attr(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only transformer, read from its config."""

    model_type: str
    """The config's ``model_type`` (for reports only, never to choose behaviour)."""
    n_layers: int
    """Number of decoder layers."""
    n_heads: int
    """Attention (query) heads per layer."""
    n_kv_heads: int
    """Key/value heads per layer (fewer than ``n_heads`` under grouped-query attention)."""
    d_model: int
    """Width of the residual stream."""
    head_dim: int
    """Width of one attention head."""

    @classmethod
    def from_config(cls, config: Any) -> ModelSpec:
        """Read the spec; raise :class:`InputError` when the config lacks a field."""
        cfg = text_config(config)
        n_layers = _first_attr(cfg, "num_hidden_layers", "n_layer", "num_layers")
        n_heads = _first_attr(cfg, "num_attention_heads", "n_head", "num_heads")
        d_model = _first_attr(cfg, "hidden_size", "n_embd", "d_model")
        if n_layers is None or n_heads is None or d_model is None:
            raise InputError(
                f"config of model_type {getattr(cfg, 'model_type', '?')!r} does not name its "
                "layer count, head count and hidden size; is it a decoder-only language model?"
            )
        n_kv = _first_attr(cfg, "num_key_value_heads", "n_head_kv") or n_heads
        head_dim = _first_attr(cfg, "head_dim") or d_model // n_heads
        return cls(
            model_type=str(getattr(cfg, "model_type", "unknown")),
            n_layers=int(n_layers),
            n_heads=int(n_heads),
            n_kv_heads=int(n_kv),
            d_model=int(d_model),
            head_dim=int(head_dim),
        )


@dataclass(frozen=True)
class LayerList:
    """The decoder layers of a model and where they live in its module tree."""

    prefix: str
    """Dotted path of the ModuleList, e.g. ``model.layers`` or ``transformer.h``."""
    layers: nn.ModuleList
    """The layers themselves."""

    def index_of(self, param_name: str) -> int | None:
        """Layer index of a parameter or module name under this list, else None."""
        match = re.search(rf"(?:^|\.){re.escape(self.prefix)}\.(\d+)(?:\.|$)", param_name)
        return int(match.group(1)) if match else None


def _strip_wrappers(model: nn.Module) -> nn.Module:
    """Unwrap PEFT models so prefixes match the base checkpoint's names."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def find_layers(model: nn.Module) -> LayerList:
    """The ModuleList of decoder layers, found by its length."""
    root = _strip_wrappers(model)
    spec = ModelSpec.from_config(root.config)
    candidates = [
        (name, mod)
        for name, mod in root.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) == spec.n_layers
    ]
    if not candidates:
        raise InputError(
            f"could not find the {spec.n_layers} decoder layers of this "
            f"{spec.model_type} model: no ModuleList of that length; "
            "pass a decoder-only causal language model"
        )
    name, mod = min(candidates, key=lambda c: c[0].count("."))
    return LayerList(prefix=name, layers=mod)


def embedding_parameters(model: nn.Module) -> set[str]:
    """Names of the input embedding and output head parameters."""
    root = _strip_wrappers(model)
    names: set[str] = set()
    ids = {
        id(p)
        for m in (root.get_input_embeddings(), root.get_output_embeddings())
        if m
        for p in m.parameters()
    }
    for name, param in root.named_parameters():
        if id(param) in ids:
            names.add(name)
    return names


def is_norm_parameter(name: str, param: torch.Tensor) -> bool:
    """Norm scales and biases: 1-D parameters of modules whose name says norm/ln."""
    leaf = name.rsplit(".", 2)
    owner = leaf[-2] if len(leaf) >= 2 else ""
    return param.ndim == 1 and bool(re.search(r"norm|ln", owner, re.IGNORECASE))
