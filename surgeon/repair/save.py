"""Write a repaired model as a standard Hugging Face directory like its input.

Same storage dtype and the same sharding scheme as the input checkpoint (one file if it was
one file, else shards no larger than its largest shard), and its tokenizer files and chat
template copied byte for byte. Input directories are never written to.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from surgeon.errors import InputError
from surgeon.loading import ModelSource
from surgeon.progress import enabled as progress_enabled
from surgeon.safetensors_io import tensor_index, weight_files
from surgeon.tokens import TOKENIZER_FILES

_ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def stored_dtype(weights_dir: Path) -> torch.dtype:
    """The floating dtype most of a checkpoint's tensors are stored in."""
    counts: dict[str, int] = {}
    for info in tensor_index(weights_dir).values():
        if info.dtype in _ST_DTYPES:
            numel = 1
            for d in info.shape:
                numel *= d
            counts[info.dtype] = counts.get(info.dtype, 0) + numel
    if not counts:
        return torch.float32
    return _ST_DTYPES[max(counts, key=lambda k: counts[k])]


def shard_size(weights_dir: Path) -> int:
    """``max_shard_size`` in bytes that reproduces the input's scheme."""
    files = weight_files(weights_dir)
    sizes = [f.stat().st_size for f in files]
    if len(files) <= 1:
        return max(sum(sizes), 1) * 4 + (1 << 30)
    return max(sizes)


def check_out_dir(out_dir: Path, inputs: list[Path | None]) -> None:
    """``out_dir`` must be new or empty, and neither an input nor inside one."""
    out = out_dir.resolve()
    for inp in inputs:
        if inp is None:
            continue
        src = inp.resolve()
        if out == src or src in out.parents:
            raise InputError(f"{out_dir}: output directory lies inside the input {inp}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: output directory exists and is not empty")


def tokenizer_dir(source: ModelSource) -> Path | None:
    """Where a model's tokenizer files live (an adapter's own, else its base's)."""
    if source.kind == "adapter":
        own = source.path is not None and (source.path / "tokenizer_config.json").exists()
        return source.path if own else source.weights_dir
    return source.path


def copy_tokenizer_files(
    tokenizer_dir: Path | None, out_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> list[str]:
    """Copy tokenizer files and chat template; fall back to ``save_pretrained``."""
    copied: list[str] = []
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            src = tokenizer_dir / name
            if src.is_file():
                shutil.copyfile(src, out_dir / name)
                copied.append(name)
    if not copied:
        tokenizer.save_pretrained(str(out_dir))
    return copied


def cast_state_dict(model: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with its floating tensors in ``dtype``, the model untouched.

    Tensors that share storage in the model (tied embeddings) share it in the result too, so
    ``save_pretrained`` still sees them as tied; tensors already in ``dtype`` are not copied.
    """
    cast: dict[tuple[int, torch.dtype, tuple[int, ...]], torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point() or tensor.dtype == dtype:
            out[name] = tensor
            continue
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if key not in cast:
            cast[key] = tensor.detach().to(dtype)
        out[name] = cast[key]
    return out


def save_like(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    weights_dir: Path,
    tokenizer_dir: Path | None,
) -> None:
    """Save ``model`` into ``out_dir`` in the dtype and sharding scheme of ``weights_dir``.

    The model is left exactly as it was: its weights are cast for the file only (a cast copy
    of the state dict when the dtype differs, :func:`cast_state_dict`) and ``save_pretrained``,
    which rewrites the config's dtype and architectures, works on a copy of the config.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = stored_dtype(weights_dir)
    state = cast_state_dict(model, dtype)
    config = model.config
    bars = hf_logging.is_progress_bar_enabled()
    if not progress_enabled():
        hf_logging.disable_progress_bar()
    try:
        model.config = copy.deepcopy(config)
        model.save_pretrained(
            str(out_dir), state_dict=state, max_shard_size=shard_size(weights_dir)
        )
        written = model.config
    finally:
        model.config = config
        if bars:
            hf_logging.enable_progress_bar()
    written.dtype = dtype  # the model may compute in float32; the file holds ``dtype``
    written.save_pretrained(str(out_dir))
    copy_tokenizer_files(tokenizer_dir, out_dir, tokenizer)
