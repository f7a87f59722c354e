"""A TransformerLens ``TransformerBridge`` view of a loaded model, for interactive probing.

surgeon's own probes read the residual stream with ``output_hidden_states`` and intervene with
scoped forward hooks on the decoder layers found by :func:`surgeon.architecture.find_layers`,
which works for any decoder-only architecture transformers can load. Where TransformerLens
supports the architecture, :func:`hookable` wraps the same in-memory model (no second copy) as a
``TransformerBridge`` with the familiar hook names (``blocks.{l}.hook_resid_post``,
``blocks.{l}.attn.hook_pattern``...). Where it does not, :func:`hookable` raises an
:class:`InputError` that says so; the probes keep working.
"""

from __future__ import annotations

from typing import Any

from surgeon.errors import InputError
from surgeon.loading import LoadedModel


def resid_hook_name(layer: int) -> str:
    """TransformerLens name of the residual stream after decoder layer ``layer`` (0-based)."""
    return f"blocks.{layer}.hook_resid_post"


def hookable(loaded: LoadedModel) -> Any:
    """Wrap ``loaded.model`` as a ``TransformerBridge`` sharing its weights.

    Raises :class:`InputError` when TransformerLens has no adapter for the architecture.
    """
    from transformer_lens.model_bridge import TransformerBridge

    name = loaded.source.weights_ref
    try:
        return TransformerBridge.boot_transformers(
            name,
            hf_model=loaded.model,
            tokenizer=loaded.tokenizer,
            device=str(next(loaded.model.parameters()).device),
        )
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise InputError(
            f"{name}: TransformerLens has no TransformerBridge adapter for model_type "
            f"{loaded.spec.model_type!r} ({exc}); surgeon's probes still work through plain "
            "forward hooks"
        ) from None
