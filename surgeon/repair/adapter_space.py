"""Rollback in a LoRA adapter's own parameters (``space = "adapter"``; README "Rollback repair").

The working model is the unmerged ``PeftModel``. Its eligible tensors are the LoRA factors
(``lora_A``/``lora_B``, or ``lora_embedding_A``/``_B``) of modules in decoder layers below L
and, by the same rules as the entry-wise space, the trained copies of ``modules_to_save``
(a copy of the input embedding with ``include_embeddings``). An entry's base value is 0 for a
LoRA factor (restoring it removes part of the low-rank update) and the original module's value
for a saved copy (read lazily from the base checkpoint). Tensors are named by their keys in
``adapter_model.safetensors``, so a rollback mask made here names the adapter file's tensors,
and the repaired model is written as a PEFT adapter again: the input's tensors with the
eligible ones replaced, in their stored dtype, and its ``adapter_config.json`` with the base
recorded as an absolute path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from surgeon.architecture import LayerList, is_norm_parameter
from surgeon.errors import InputError
from surgeon.loading import ModelSource
from surgeon.repair.lazy_base import LazyTensors
from surgeon.repair.rollback_config import RollbackConfig
from surgeon.safetensors_io import read_header

ADAPTER_FILE = "adapter_model.safetensors"
"""The adapter's weights file (the only adapter format this space reads and writes)."""
ADAPTER_CONFIG = "adapter_config.json"
"""The adapter's PEFT config."""
ResolvedSpace = Literal["entries", "adapter"]


@dataclass(frozen=True)
class AdapterTensor:
    """One trainable tensor of a PEFT adapter and what restoring its entries means."""

    key: str
    """Its key in ``adapter_model.safetensors`` (the adapter name left out, as PEFT saves)."""
    param: nn.Parameter
    """The working model's parameter."""
    kind: Literal["lora", "saved"]
    """``lora``: a LoRA factor, base value 0; ``saved``: a trained copy of a module
    (``modules_to_save``), base value the original module's."""
    owner: str
    """The adapted module's name in the base model (``model.layers.0.self_attn.q_proj``)."""
    base_key: str | None
    """``saved``: the base checkpoint's tensor the copy replaces (``model.embed_tokens.weight``);
    None for LoRA factors."""


def adapter_space_problem(source: ModelSource) -> str | None:
    """Why ``source`` cannot be repaired in its own parameters (None: it can): it must be a
    plain LoRA adapter (no DoRA) stored as ``adapter_model.safetensors``."""
    if source.kind != "adapter" or source.path is None:
        return f"{source.ref} is not a PEFT adapter directory"
    cfg = source.adapter_config
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        return f"{source.path}: adapter type {cfg.get('peft_type')!r} is not LoRA"
    if cfg.get("use_dora"):
        return f"{source.path}: a DoRA adapter's magnitude vectors have no zero base value"
    if not (source.path / ADAPTER_FILE).is_file():
        return f"{source.path}: no {ADAPTER_FILE}"
    return None


def resolve_space(requested: str, source: ModelSource) -> ResolvedSpace:
    """The space a repair of ``source`` runs in: ``auto`` is ``adapter`` for a plain LoRA
    adapter, ``entries`` otherwise; ``adapter`` on anything else is an :class:`InputError`."""
    problem = adapter_space_problem(source)
    if requested == "entries":
        return "entries"
    if requested == "adapter":
        if problem is not None:
            raise InputError(f"--space adapter: {problem}; use --space entries")
        return "adapter"
    return "adapter" if problem is None else "entries"


def _prefix(model: nn.Module) -> tuple[nn.Module, str]:
    """The wrapped transformers model and its dotted name inside the ``PeftModel`` plus a dot."""
    get_base = getattr(model, "get_base_model", None)
    if not callable(get_base):
        raise InputError("rollback in adapter space needs an unmerged PeftModel")
    root = get_base()
    name = next(n for n, m in model.named_modules() if m is root)
    return root, f"{name}." if name else ""


def adapter_tensors(model: nn.Module, adapter_file: Path | None = None) -> list[AdapterTensor]:
    """Every trainable tensor of the active adapter of ``model`` (an unmerged ``PeftModel``
    loaded trainable), found in the module tree: LoRA factors and saved module copies.

    With ``adapter_file``, each key must be a tensor of that file with the same shape and the
    file may hold no other tensor. Raises :class:`InputError` for a trainable parameter with no
    known base value (another adapter kind) or a file that does not match.
    """
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    adapter = str(model.active_adapter)  # type: ignore[attr-defined]
    root, prefix = _prefix(model)
    out: list[AdapterTensor] = []
    for name, mod in root.named_modules():
        if isinstance(mod, ModulesToSaveWrapper) and adapter in mod.modules_to_save:
            copy = mod.modules_to_save[adapter]
            for pn, p in copy.named_parameters():
                key = f"{prefix}{name}.{pn}"
                out.append(AdapterTensor(key, p, "saved", name, f"{name}.{pn}"))
        elif isinstance(mod, LoraLayer):
            for attr in ("lora_A", "lora_B"):
                factors = getattr(mod, attr)
                if adapter in factors:
                    for pn, p in factors[adapter].named_parameters():
                        out.append(
                            AdapterTensor(f"{prefix}{name}.{attr}.{pn}", p, "lora", name, None)
                        )
            for attr in ("lora_embedding_A", "lora_embedding_B"):
                table = getattr(mod, attr, {})
                if adapter in table:
                    out.append(
                        AdapterTensor(f"{prefix}{name}.{attr}", table[adapter], "lora", name, None)
                    )
    known = {id(t.param) for t in out}
    for pname, p in model.named_parameters():
        if p.requires_grad and id(p) not in known:
            raise InputError(
                f"adapter parameter {pname} is neither a LoRA factor nor a saved module copy: "
                "it has no known base value; use --space entries"
            )
    if adapter_file is not None:
        _check_file(adapter_file, out)
    return out


def _check_file(adapter_file: Path, tensors: list[AdapterTensor]) -> None:
    header = {k: v for k, v in read_header(adapter_file).items() if k != "__metadata__"}
    for t in tensors:
        info = header.get(t.key)
        if info is None:
            raise InputError(
                f"{adapter_file}: has no tensor {t.key} (the loaded adapter's layout is not the "
                "file's); use --space entries"
            )
        if tuple(info["shape"]) != tuple(t.param.shape):
            raise InputError(
                f"{adapter_file}: {t.key} has shape {info['shape']}, the loaded adapter "
                f"{list(t.param.shape)}"
            )
    extra = sorted(set(header) - {t.key for t in tensors})
    if extra:
        raise InputError(
            f"{adapter_file}: holds {extra[0]}, which the loaded adapter does not train; "
            "use --space entries"
        )


def adapter_eligible(
    model: nn.Module,
    tensors: list[AdapterTensor],
    layers: LayerList,
    layer: int,
    config: RollbackConfig,
) -> list[AdapterTensor]:
    """The adapter tensors rollback may restore: those of modules in decoder layers ``<
    layer`` (a saved norm only with ``include_norms``) and those of the input embedding with
    ``include_embeddings``; the entry-wise space's rules, applied to the adapted module."""
    root, _ = _prefix(model)
    embed = root.get_input_embeddings()
    embed_names = {n for n, m in root.named_modules() if m is embed}
    out: list[AdapterTensor] = []
    for t in tensors:
        idx = layers.index_of(t.owner)
        if idx is not None:
            norm = t.base_key is not None and is_norm_parameter(t.base_key, t.param)
            if idx < layer and (config.include_norms or not norm):
                out.append(t)
        elif config.include_embeddings and any(
            t.owner == n or t.owner.startswith(f"{n}.") for n in embed_names
        ):
            out.append(t)
    if not out:
        raise InputError(f"no adapter parameters are eligible for rollback below layer {layer}")
    return out


def base_decoder_entries(model: nn.Module, layers: LayerList, tensors: list[AdapterTensor]) -> int:
    """Entries of the base model's decoder layers (the adapter's own tensors left out): the
    same denominator as the entry-wise space's restored share of the decoder."""
    own = {id(t.param) for t in tensors}
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if layers.index_of(n) is not None and id(p) not in own
    )


class AdapterBase:
    """Base values of adapter tensors, read like :class:`LazyTensors`: zeros for a LoRA
    factor, the base checkpoint's tensor for a saved module copy (one tensor kept at a
    time)."""

    def __init__(self, tensors: list[AdapterTensor], base: LazyTensors) -> None:
        self.directory = base.directory
        self.device = base.device
        self._tensors = {t.key: t for t in tensors}
        self._base = base
        self._zeros: tuple[tuple[int, ...], Tensor] | None = None

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def __call__(self, name: str) -> Tensor:
        """The base value of the adapter tensor ``name`` (its file key), fp32."""
        t = self._tensors.get(name)
        if t is None:
            raise InputError(f"adapter has no tensor {name}")
        if t.kind == "saved":
            assert t.base_key is not None
            return self._base(t.base_key)
        shape = tuple(t.param.shape)
        if self._zeros is None or self._zeros[0] != shape:
            self._zeros = (shape, torch.zeros(shape, dtype=torch.float32, device=self.device))
        return self._zeros[1]

    def clear(self) -> None:
        """Drop the cached tensors."""
        self._base.clear()
        self._zeros = None


def write_adapter(
    adapter_dir: Path,
    out_dir: Path,
    values: Mapping[str, Tensor],
    base_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    tokenizer_dir: Path | None,
) -> None:
    """Write a PEFT adapter into ``out_dir``: the tensors of ``adapter_dir``'s
    ``adapter_model.safetensors`` with those named in ``values`` replaced (cast to their
    stored dtype; the file's metadata kept), its ``adapter_config.json`` with
    ``base_model_name_or_path`` set to ``base_dir`` (absolute), and the tokenizer files."""
    from surgeon.repair.save import copy_tokenizer_files

    src = adapter_dir / ADAPTER_FILE
    tensors = load_file(str(src))
    for key, value in values.items():
        old = tensors.get(key)
        if old is None or tuple(old.shape) != tuple(value.shape):
            raise InputError(f"{src}: has no tensor {key} of shape {list(value.shape)}")
        tensors[key] = value.detach().to(device="cpu", dtype=old.dtype).contiguous()
    meta = read_header(src).get("__metadata__") or {"format": "pt"}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / ADAPTER_FILE), metadata=dict(meta))
    cfg = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = str(Path(base_dir).resolve())
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    copy_tokenizer_files(tokenizer_dir, out_dir, tokenizer)


def masked_values(
    adapter_dir: Path,
    indices: Mapping[str, Tensor],
    base: AdapterBase,
) -> dict[str, Tensor]:
    """The adapter file's tensors named in ``indices`` with those flat entries set to their
    base values (fp32): what a rollback mask made in adapter space restores."""
    stored = load_file(str(adapter_dir / ADAPTER_FILE))
    out: dict[str, Tensor] = {}
    for key, idx in indices.items():
        value = stored[key].to(torch.float32).clone()
        flat = value.view(-1)
        flat[idx] = base(key).reshape(-1)[idx.to(base.device)].to("cpu")
        out[key] = value
    base.clear()
    return out
