"""The rollback mask: which entries of which tensors were copied from the base.

Stored as ``rollback_mask.safetensors``: for every touched tensor, the sorted flat indices of
the restored entries (int32 when the tensor has fewer than 2**31 entries, else int64) under the
tensor's own name; the header metadata names the format, the base, the model, the space, the
shapes and the counts. Applying the mask to the fine-tuned model with the same base reproduces
the repaired model exactly, because every restored entry is a plain copy of the base's value
(in adapter space: 0 for a LoRA factor, the original module's value for a saved copy).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from surgeon.errors import InputError
from surgeon.loading import LoadOptions
from surgeon.safetensors_io import read_header, tensor_index

MASK_NAME = "rollback_mask.safetensors"
"""File name of the mask inside a repaired model directory."""
MASK_FORMAT = "surgeon-rollback-mask"
MASK_VERSION = "1"
SPACES = ("entries", "adapter")
"""Values of the metadata's ``space``: indices into the model's weights (``entries``; a mask
without the key is one) or into a LoRA adapter's own tensors, named by their keys in
``adapter_model.safetensors`` (``adapter``)."""


@dataclass(frozen=True)
class RollbackMask:
    """Restored entries per tensor, and where they came from."""

    indices: dict[str, Tensor]
    """Tensor name -> sorted flat int64 indices of the entries copied from the base."""
    shapes: dict[str, tuple[int, ...]]
    """Tensor name -> shape of the tensor the indices refer to."""
    eligible_entries: int
    """Number of entries that were eligible for restoration."""
    metadata: dict[str, str] = field(default_factory=dict)
    """Free-form provenance: base, model, selection, layer."""

    @property
    def restored_entries(self) -> int:
        """Total number of restored entries."""
        return sum(int(v.numel()) for v in self.indices.values())

    @property
    def restored_fraction(self) -> float:
        """Restored entries over eligible entries."""
        return self.restored_entries / self.eligible_entries if self.eligible_entries else 0.0

    def bool_mask(self, name: str) -> Tensor:
        """The dense boolean mask of one tensor (True = restored)."""
        mask = torch.zeros(self.shapes[name], dtype=torch.bool)
        mask.view(-1)[self.indices[name]] = True
        return mask


def save_mask(mask: RollbackMask, path: Path) -> None:
    """Write a mask as safetensors with its metadata in the header."""
    tensors = {}
    for name, idx in mask.indices.items():
        numel = 1
        for d in mask.shapes[name]:
            numel *= d
        dtype = torch.int32 if numel < 2**31 else torch.int64
        tensors[name] = idx.to(dtype).contiguous()
    meta = {
        **mask.metadata,
        "format": MASK_FORMAT,
        "version": MASK_VERSION,
        "encoding": "flat_indices",
        "eligible_entries": str(mask.eligible_entries),
        "shapes": json.dumps({k: list(v) for k, v in mask.shapes.items()}),
    }
    save_file(tensors, str(path), metadata=meta)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _read_shapes(path: Path, raw: str | None) -> dict[str, tuple[int, ...]]:
    try:
        data = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: rollback mask metadata is damaged (shapes: {exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: rollback mask metadata is damaged (no shapes record)")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in data.items():
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise InputError(f"{path}: rollback mask records shape {shape!r} for {name}")
        shapes[name] = tuple(shape)
    return shapes


def _check_indices(path: Path, name: str, idx: Tensor, shape: tuple[int, ...]) -> None:
    """Flat indices must be integers in ``[0, numel)`` of the recorded shape, one dimension."""
    if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise InputError(f"{path}: indices of {name} are {idx.dtype}, not integers")
    if idx.dim() != 1:
        raise InputError(f"{path}: indices of {name} have shape {list(idx.shape)}, not flat")
    numel = _numel(shape)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
        bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
        raise InputError(
            f"{path}: index {bad} of {name} is out of range for its shape {list(shape)} "
            f"({numel} entries)"
        )


def load_mask(path: str | Path) -> RollbackMask:
    """Read a mask written by :func:`save_mask`; raise :class:`InputError` naming the file when
    it is not one or is damaged (indices out of range, not integers, shapes missing)."""
    path = Path(path)
    if path.is_dir():
        path = path / MASK_NAME
    if not path.exists():
        raise InputError(f"{path}: no such rollback mask")
    header = read_header(path)
    meta = dict(header.get("__metadata__") or {})
    if meta.get("format") != MASK_FORMAT:
        raise InputError(f"{path}: not a surgeon rollback mask (format {meta.get('format')!r})")
    shapes = _read_shapes(path, meta.pop("shapes", None))
    try:
        eligible = int(meta.pop("eligible_entries"))
    except (KeyError, ValueError) as exc:
        raise InputError(f"{path}: rollback mask metadata is damaged ({exc})") from None
    if eligible < 0:
        raise InputError(f"{path}: rollback mask records {eligible} eligible entries")
    indices: dict[str, Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            if name not in shapes:
                raise InputError(f"{path}: tensor {name} has no recorded shape")
            raw = f.get_tensor(name)
            _check_indices(path, name, raw, shapes[name])
            indices[name] = raw.to(torch.int64)
    for k in ("format", "version", "encoding"):
        meta.pop(k, None)
    if meta.get("space", "entries") not in SPACES:
        raise InputError(f"{path}: rollback mask records space {meta['space']!r}")
    return RollbackMask(indices, shapes, eligible, meta)


def check_mask_fits(mask: RollbackMask, path: Path, directory: Path, role: str) -> None:
    """Every tensor the mask restores must exist in the checkpoint ``directory`` with the
    recorded shape (headers only, before any model is loaded); else :class:`InputError` naming
    the mask file, the tensor and ``role`` (``model`` or ``base``)."""
    index = tensor_index(directory)
    for name in mask.indices:
        info = index.get(name)
        if info is None:
            raise InputError(
                f"{path}: rollback mask names {name}, which the {role} {directory} does not "
                "have (a mask from another model?)"
            )
        if info.shape != mask.shapes[name]:
            raise InputError(
                f"{path}: rollback mask shape of {name} is {list(mask.shapes[name])}, "
                f"the {role} {directory} has {list(info.shape)} (a mask from another model?)"
            )


def apply_mask_to_model(
    model: nn.Module, mask: RollbackMask, read_base: Callable[[str], Tensor]
) -> None:
    """Copy the masked entries from the base into ``model`` (in place).

    ``read_base(name) -> Tensor`` returns the base's tensor of that name.
    """
    params = dict(model.named_parameters())
    for name, idx in mask.indices.items():
        if name not in params:
            raise InputError(f"rollback mask names {name}, which the model does not have")
        param = params[name]
        if tuple(param.shape) != mask.shapes[name]:
            raise InputError(
                f"rollback mask shape of {name} is {list(mask.shapes[name])}, "
                f"the model's is {list(param.shape)}"
            )
        base = read_base(name)
        flat = param.data.view(-1)
        idx = idx.to(flat.device)
        flat[idx] = base.reshape(-1)[idx].to(dtype=flat.dtype)


def apply_mask(
    model_dir_or_model: str | Path | nn.Module,
    base_dir: str | Path,
    mask_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    options: LoadOptions | None = None,
) -> nn.Module:
    """Re-apply a saved rollback: copy the masked entries of ``base_dir`` into the model.

    A path (full model or PEFT adapter, merged onto ``base_dir``) is loaded in fp32, repaired
    and, with ``out_dir``, saved like :func:`surgeon.repair.rollback.rollback_repair` saves
    (same dtype, sharding and tokenizer files), which reproduces the repaired model exactly.
    A model object is repaired in place (and saved with ``save_pretrained`` to ``out_dir``).
    Returns the repaired model.
    """
    from surgeon.loading import load_model, resolve_source
    from surgeon.repair.lazy_base import LazyTensors
    from surgeon.repair.save import check_out_dir, save_like, tokenizer_dir

    mask_file = Path(mask_path) / MASK_NAME if Path(mask_path).is_dir() else Path(mask_path)
    mask = load_mask(mask_file)
    gguf_file = options.gguf_file if options is not None else None
    base_source = resolve_source(base_dir, gguf_file=gguf_file)
    if base_source.weights_dir is None:
        raise InputError(f"{base_dir}: the base must be a local directory")
    if mask.metadata.get("space") == "adapter":
        return _apply_adapter_mask(
            model_dir_or_model, base_source.weights_dir, mask, mask_file, out_dir, options
        )
    check_mask_fits(mask, mask_file, base_source.weights_dir, "base")
    if isinstance(model_dir_or_model, nn.Module):
        device = next(model_dir_or_model.parameters()).device
        apply_mask_to_model(model_dir_or_model, mask, LazyTensors(base_source.weights_dir, device))
        if out_dir is not None:
            model_dir_or_model.save_pretrained(str(out_dir))  # type: ignore[operator]
        return model_dir_or_model
    opts = replace(options or LoadOptions(), dtype="float32")
    source = resolve_source(model_dir_or_model, base_dir, gguf_file)
    if source.weights_dir is not None:
        check_mask_fits(mask, mask_file, source.weights_dir, "model")
    if out_dir is not None:
        check_out_dir(Path(out_dir), [source.path, source.weights_dir, base_source.weights_dir])
    loaded = load_model(model_dir_or_model, base=base_dir, options=opts, merge_adapter=True)
    device = next(loaded.model.parameters()).device
    with torch.no_grad():
        apply_mask_to_model(loaded.model, mask, LazyTensors(base_source.weights_dir, device))
    if out_dir is not None:
        weights = source.weights_dir or base_source.weights_dir
        save_like(loaded.model, loaded.tokenizer, Path(out_dir), weights, tokenizer_dir(source))
    return loaded.model


def _check_adapter_mask_fits(mask: RollbackMask, path: Path, adapter_file: Path) -> None:
    """Every tensor an adapter-space mask names must be in the adapter file, same shape."""
    header = read_header(adapter_file)
    for name in mask.indices:
        info = header.get(name) if name != "__metadata__" else None
        if info is None:
            raise InputError(
                f"{path}: rollback mask names {name}, which the adapter {adapter_file} does not "
                "have (a mask from another adapter?)"
            )
        if tuple(info["shape"]) != mask.shapes[name]:
            raise InputError(
                f"{path}: rollback mask shape of {name} is {list(mask.shapes[name])}, the "
                f"adapter {adapter_file} has {list(info['shape'])} (a mask from another adapter?)"
            )


def _apply_adapter_mask(
    model: str | Path | nn.Module,
    base_dir: Path,
    mask: RollbackMask,
    mask_file: Path,
    out_dir: str | Path | None,
    options: LoadOptions | None,
) -> nn.Module:
    """:func:`apply_mask` for a mask made in a LoRA adapter's own tensors: the masked entries
    set to their base values (0 for a factor, the base's for a saved copy); a path is written
    as a PEFT adapter like the repair writes it."""
    from surgeon.loading import load_model, resolve_source
    from surgeon.repair.adapter_space import (
        ADAPTER_FILE,
        AdapterBase,
        adapter_space_problem,
        adapter_tensors,
        masked_values,
        write_adapter,
    )
    from surgeon.repair.lazy_base import LazyTensors
    from surgeon.repair.save import check_out_dir, tokenizer_dir

    if isinstance(model, nn.Module):
        if not callable(getattr(model, "get_base_model", None)):
            raise InputError(
                f"{mask_file}: the mask was made in a LoRA adapter's own tensors; apply it to "
                "an unmerged PeftModel"
            )
        tensors = adapter_tensors(model)
        device = next(model.parameters()).device
        base = AdapterBase(tensors, LazyTensors(base_dir, device))
        params = {t.key: t.param for t in tensors}
        with torch.no_grad():
            for name, idx in mask.indices.items():
                param = params.get(name)
                if param is None or tuple(param.shape) != mask.shapes[name]:
                    raise InputError(f"{mask_file}: the adapter has no tensor {name} of its shape")
                flat = param.data.view(-1)
                idx = idx.to(flat.device)
                flat[idx] = base(name).reshape(-1)[idx].to(dtype=flat.dtype)
        if out_dir is not None:
            model.save_pretrained(str(out_dir))  # type: ignore[operator]
        return model
    source = resolve_source(model, base_dir)
    problem = adapter_space_problem(source)
    if problem is not None:
        raise InputError(
            f"{mask_file}: the mask was made in a LoRA adapter's own tensors (space adapter), "
            f"but {problem}"
        )
    assert source.path is not None
    _check_adapter_mask_fits(mask, mask_file, source.path / ADAPTER_FILE)
    if out_dir is not None:
        check_out_dir(Path(out_dir), [source.path, base_dir])
    opts = replace(options or LoadOptions(), dtype="float32")
    loaded = load_model(model, base=base_dir, options=opts, merge_adapter=False)
    tensors = adapter_tensors(loaded.model, source.path / ADAPTER_FILE)
    device = next(loaded.model.parameters()).device
    values = masked_values(
        source.path, mask.indices, AdapterBase(tensors, LazyTensors(base_dir, device))
    )
    params = {t.key: t.param for t in tensors}
    with torch.no_grad():
        for name, value in values.items():
            params[name].data.copy_(value.to(params[name].device))
    if out_dir is not None:
        tok_dir = tokenizer_dir(source)
        write_adapter(source.path, Path(out_dir), values, base_dir, loaded.tokenizer, tok_dir)
    return loaded.model
