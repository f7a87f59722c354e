"""Where the attention heads live: one locator for every head probe, ablation and LoRA placement.

For each decoder layer (:func:`surgeon.architecture.find_layers`) the attention module is the
descendant whose own linear children are an output projection ``[n_heads * head_dim ->
d_model]`` and either three input projections from the residual stream (queries
``n_heads * head_dim`` wide, keys and values ``n_kv_heads * head_dim`` wide) or one fused
projection ``(n_heads + 2 * n_kv_heads) * head_dim`` wide. Widths come from the config
(:class:`surgeon.architecture.ModelSpec`), the modules from the tree: never from the model's
name. ``nn.Linear``, GPT-2's transposed ``Conv1D`` and PEFT LoRA wrappers (through their
``base_layer``) count as linear.

A head's output is the slice ``[h * head_dim, (h + 1) * head_dim)`` of the output projection's
input (TransformerLens ``hook_z``): every supported architecture concatenates the heads in
order before projecting. Under grouped-query attention, query head ``h`` reads key/value
group ``h // (n_heads // n_kv_heads)`` (``repeat_kv`` in transformers).

Module names are relative to the unwrapped model root (``model.layers.3.self_attn.o_proj``),
the form PEFT's ``target_modules`` matches by suffix, also on a ``PeftModel``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from torch import nn
from transformers.pytorch_utils import Conv1D

from surgeon.architecture import ModelSpec, find_layers
from surgeon.errors import InputError

KINDS = ("q", "k", "v", "o")
"""Projection kinds that :meth:`AttentionMap.target_modules` accepts."""


@dataclass(frozen=True)
class HeadLayout:
    """How the query and key/value heads of one attention layer are laid out."""

    n_heads: int
    """Query heads per layer."""
    n_kv_heads: int
    """Key/value heads per layer (fewer than ``n_heads`` under grouped-query attention)."""
    head_dim: int
    """Width of one head."""

    def __post_init__(self) -> None:
        if min(self.n_heads, self.n_kv_heads, self.head_dim) < 1:
            raise InputError(f"head layout needs positive sizes, got {self}")
        if self.n_heads % self.n_kv_heads:
            raise InputError(
                f"{self.n_heads} query heads do not split evenly over {self.n_kv_heads} "
                "key/value heads; the config's num_key_value_heads is inconsistent"
            )

    @property
    def group_size(self) -> int:
        """Query heads that share one key/value head."""
        return self.n_heads // self.n_kv_heads

    def kv_group(self, head: int) -> int:
        """The key/value head that query head ``head`` reads."""
        self._check(head)
        return head // self.group_size

    def head_slice(self, head: int) -> slice:
        """Channels of query head ``head`` in the output projection's input (and in q_proj's
        output for unfused projections)."""
        self._check(head)
        return slice(head * self.head_dim, (head + 1) * self.head_dim)

    def kv_slice(self, group: int) -> slice:
        """Output channels of key/value head ``group`` in unfused k_proj and v_proj."""
        if not 0 <= group < self.n_kv_heads:
            raise ValueError(f"kv group must be in [0, {self.n_kv_heads}), got {group}")
        return slice(group * self.head_dim, (group + 1) * self.head_dim)

    def _check(self, head: int) -> None:
        if not 0 <= head < self.n_heads:
            raise ValueError(f"head must be in [0, {self.n_heads}), got {head}")


@dataclass(frozen=True)
class AttentionSite:
    """The attention of one decoder layer and its projections, named from the model root."""

    layer: int
    """0-based decoder layer."""
    name: str
    """The attention module, e.g. ``model.layers.3.self_attn``."""
    o_proj: str
    """Output projection (``o_proj``, GPT-2 ``c_proj``, GPT-NeoX ``dense``...)."""
    q_proj: str | None
    """Query projection; None when fused."""
    k_proj: str | None
    """Key projection; None when fused."""
    v_proj: str | None
    """Value projection; None when fused."""
    qkv_proj: str | None
    """Fused query/key/value projection (GPT-2 ``c_attn``, Phi-3 ``qkv_proj``, GPT-NeoX
    ``query_key_value``); None when separate. How heads are ordered inside a fused output
    differs by architecture (blocked or interleaved per head) and is not reported."""
    module: nn.Module = field(compare=False, repr=False)
    """The attention module itself (forward hooks go here)."""
    output_projection: nn.Module = field(compare=False, repr=False)
    """The output projection module (per-head pre-hooks go here)."""

    @property
    def fused(self) -> bool:
        """True when queries, keys and values come from one projection."""
        return self.qkv_proj is not None

    def projection(self, kind: str) -> str:
        """Name of the module that produces ``kind`` (q, k, v, o); the fused one for q/k/v."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "o":
            return self.o_proj
        if self.qkv_proj is not None:
            return self.qkv_proj
        name = {"q": self.q_proj, "k": self.k_proj, "v": self.v_proj}[kind]
        assert name is not None
        return name


@dataclass(frozen=True)
class AttentionMap:
    """Every layer's attention site and the shared head layout."""

    layout: HeadLayout
    """Head counts and width (the same in every layer)."""
    sites: tuple[AttentionSite, ...]
    """One per decoder layer, in layer order."""

    @property
    def n_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.sites)

    @property
    def n_heads(self) -> int:
        """Query heads per layer."""
        return self.layout.n_heads

    def all_heads(self) -> list[tuple[int, int]]:
        """Every (layer, query head) pair, layer-major."""
        return [(layer, h) for layer in range(self.n_layers) for h in range(self.n_heads)]

    def target_modules(
        self, layers: Iterable[int] | None = None, kinds: Iterable[str] = KINDS
    ) -> list[str]:
        """Module names for PEFT's ``target_modules`` (q/k/v/o of ``layers``; all when None).

        A fused projection appears once for q, k and v.
        """
        chosen = range(self.n_layers) if layers is None else sorted(set(layers))
        kinds = tuple(kinds)
        names: list[str] = []
        for layer in chosen:
            if not 0 <= layer < self.n_layers:
                raise ValueError(f"layer must be in [0, {self.n_layers}), got {layer}")
            for kind in kinds:
                name = self.sites[layer].projection(kind)
                if name not in names:
                    names.append(name)
        return names


def _unwrap(model: nn.Module) -> nn.Module:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a linear-like module, else None.

    ``nn.Linear`` and its subclasses, transformers' ``Conv1D`` (weight stored ``[in, out]``),
    and wrappers exposing ``base_layer`` (PEFT LoRA).
    """
    base = getattr(module, "base_layer", None)
    if isinstance(base, nn.Module) and base is not module:
        return linear_dims(base)
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.nf)
    return None


_HINTS = {
    "q": {"q", "query", "wq"},
    "k": {"k", "key", "wk"},
    "v": {"v", "value", "wv"},
    "o": {"o", "out", "dense", "wo", "output"},
}


def _hint(name: str) -> set[str]:
    """Roles that a child's attribute name suggests (``q_proj`` -> q, ``dense`` -> o)."""
    tokens = set(re.split(r"[_.]", name.lower()))
    return {role for role, words in _HINTS.items() if tokens & words}


def _choose(names: list[str], role: str) -> str:
    """The name hinting at ``role``; else the first (q, k, v) or last (o) registered."""
    hinted = [n for n in names if role in _hint(n)]
    if len(hinted) == 1:
        return hinted[0]
    if role == "o":
        unhinted = [n for n in names if not _hint(n) & {"q", "k", "v"}]
        return (unhinted or names)[-1]
    return names[0]


def _classify(
    module: nn.Module, spec: ModelSpec, layout: HeadLayout
) -> tuple[str, str | None, str | None, str | None, str | None] | None:
    """(o, q, k, v, qkv) child names if ``module`` looks like attention, else None.

    Shapes decide first; when several children share a shape (multi-head attention whose
    width equals the residual stream's: q, k, v and o are all square), the attribute names'
    usual words (q/query, k/key, v/value, o/out/dense) and then registration order decide.
    """
    q_w = layout.n_heads * layout.head_dim
    kv_w = layout.n_kv_heads * layout.head_dim
    dims = [(n, linear_dims(c)) for n, c in module.named_children()]
    linear = [(n, d) for n, d in dims if d is not None]
    outs = [n for n, (i, o) in linear if i == q_w and o == spec.d_model]
    fused = [n for n, (i, o) in linear if i == spec.d_model and o == q_w + 2 * kv_w]
    queries = [n for n, (i, o) in linear if i == spec.d_model and o == q_w]
    kvs = [n for n, (i, o) in linear if i == spec.d_model and o == kv_w]
    if not outs:
        return None
    others = (set(queries) | set(kvs)) - set(outs)
    if len(fused) == 1 and not others:
        o = outs[0] if len(outs) == 1 else _choose(outs, "o")
        return o, None, None, None, fused[0]
    if q_w == kv_w:  # multi-head attention: q, k and v share one shape
        if len(set(queries) | set(outs)) != 4:
            return None
        o = _choose(outs, "o")
        trio = [n for n in queries if n != o]
        q = _choose(trio, "q")
        rest = [n for n in trio if n != q]
    else:
        o = _choose(outs, "o") if len(outs) > 1 else outs[0]
        qs = [n for n in queries if n != o]
        if len(qs) != 1 or len(kvs) != 2:
            return None
        q, rest = qs[0], kvs
    k = _choose(rest, "k")
    v = next(n for n in rest if n != k)
    return o, q, k, v, None


def find_attention(model: nn.Module) -> AttentionMap:
    """Locate every layer's attention module, its projections and the head layout.

    Raises :class:`InputError` naming what was expected when a layer has no attention module
    of the config's shape, or more than one.
    """
    root = _unwrap(model)
    spec = ModelSpec.from_config(root.config)
    layout = HeadLayout(spec.n_heads, spec.n_kv_heads, spec.head_dim)
    layer_list = find_layers(root)
    names = {id(m): n for n, m in root.named_modules()}
    sites: list[AttentionSite] = []
    for i, layer in enumerate(layer_list.layers):
        found = []
        for sub_name, sub in layer.named_modules():
            if sub is layer:
                continue
            parts = _classify(sub, spec, layout)
            if parts is not None:
                found.append((sub_name, sub, parts))
        if len(found) != 1:
            what = "no module" if not found else f"{len(found)} modules ({found[0][0]}, ...)"
            raise InputError(
                f"decoder layer {i} of this {spec.model_type} model: found {what} with an "
                f"output projection [{layout.n_heads}x{layout.head_dim} -> {spec.d_model}] and "
                f"query/key/value projections ({layout.n_heads} query, {layout.n_kv_heads} "
                "key/value heads, separate or fused); check num_attention_heads, "
                "num_key_value_heads and head_dim in config.json"
            )
        sub_name, sub, (o, q, k, v, qkv) = found[0]
        prefix = names[id(sub)]

        def full(child: str | None, prefix: str = prefix) -> str | None:
            return None if child is None else f"{prefix}.{child}"

        sites.append(
            AttentionSite(
                layer=i,
                name=prefix,
                o_proj=f"{prefix}.{o}",
                q_proj=full(q),
                k_proj=full(k),
                v_proj=full(v),
                qkv_proj=full(qkv),
                module=sub,
                output_projection=getattr(sub, o),
            )
        )
    return AttentionMap(layout=layout, sites=tuple(sites))
