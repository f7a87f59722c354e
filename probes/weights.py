"""Weights probe: where, and how much, a fine-tune moved away from its base.

Tensors are streamed one pair at a time from safetensors (``safe_open``), converted to float32
per tensor, so peak memory stays near the largest tensor pair whatever the model size. A PEFT
LoRA adapter is compared through its exact delta ``B @ A * scaling`` per target module,
without merging anything.
"""

from __future__ import annotations

import math
import mmap
import re
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import safe_open
from torch import Tensor

from surgeon.errors import InputError
from surgeon.loading import ModelSource, check_compatible, resolve_source
from surgeon.safetensors_io import TensorInfo, read_header, tensor_index

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class WeightsConfig:
    """How weight deltas are measured."""

    tol: float = 0.0
    """An entry counts as changed when ``|delta| > tol`` (0: any exact difference)."""
    top_k: int = 8
    """Singular directions whose share of the delta's energy is reported."""
    svd_max_dim: int = 256
    """Above this smaller dimension, a randomised low-rank SVD estimates the top-k energy."""
    n_most_changed: int = 3
    """How many layers ``most_changed_layers`` lists."""

    def __post_init__(self) -> None:
        if self.tol < 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.svd_max_dim < 1:
            raise ValueError(f"svd_max_dim must be >= 1, got {self.svd_max_dim}")
        if self.n_most_changed < 1:
            raise ValueError(f"n_most_changed must be >= 1, got {self.n_most_changed}")


@dataclass(frozen=True)
class ModuleDelta:
    """How one weight matrix (2-D or more) changed."""

    name: str
    """Hugging Face tensor name, e.g. ``model.layers.12.self_attn.o_proj.weight``."""
    layer: int | None
    """0-based decoder layer, None for tensors outside the layers (embeddings, head)."""
    module_type: str
    """Last name component before ``.weight`` (``q_proj``, ``down_proj``...)."""
    shape: tuple[int, ...]
    """Tensor shape."""
    rel_delta: float
    """``||W_model - W_base||_F / ||W_base||_F``."""
    changed_fraction: float
    """Share of entries with ``|delta| > tol``."""
    top_k_energy: float | None
    """Share of the delta's squared Frobenius norm in its top-k singular directions (2-D
    tensors with a nonzero delta only)."""


@dataclass(frozen=True)
class WeightsResult:
    """Per-module deltas of a fine-tune against its base."""

    modules: tuple[ModuleDelta, ...]
    """Every compared 2-D+ weight, in checkpoint order (an adapter: its target modules)."""
    changed_fraction: float
    """Share of all base parameters (every tensor) that changed."""
    most_changed_layers: tuple[int, ...]
    """Layers with the highest mean ``rel_delta`` over their modules (only layers that moved)."""
    layer_rel_delta: dict[int, float]
    """Mean ``rel_delta`` per decoder layer."""
    n_params: int
    """Parameters in the base checkpoint."""
    n_changed: int
    """Parameters that changed."""
    adapter: bool
    """True when the model was a PEFT adapter compared through its LoRA delta."""
    top_k: int
    """The k of ``top_k_energy``."""


def layer_of(name: str) -> int | None:
    """Decoder-layer index named in a tensor path (``layers.N.`` / ``h.N.``), else None."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def module_type_of(name: str) -> str:
    """The module's own name: the component before ``.weight`` (or the last one)."""
    parts = name.split(".")
    return parts[-2] if len(parts) > 1 and parts[-1] == "weight" else parts[-1]


def top_k_energy(
    delta: Float[Tensor, "m n"], k: int, max_dim: int, total: float | None = None
) -> float | None:
    """Share of ``||delta||_F^2`` in its top-k singular values (None for a zero delta)."""
    total = float(delta.square().sum()) if total is None else total
    if total == 0.0:
        return None
    if min(delta.shape) <= max_dim:
        s = torch.linalg.svdvals(delta)
    else:
        q = min(k + 8, min(delta.shape))
        torch.manual_seed(0)
        _, s, _ = torch.svd_lowrank(delta, q=q, niter=2)
    return min(1.0, float(s[:k].square().sum()) / total)


def measure(
    name: str, delta: Tensor, base: Tensor, config: WeightsConfig, *, equal: bool = False
) -> tuple[ModuleDelta | None, int]:
    """One tensor's delta record (None for 1-D tensors) and its number of changed entries.

    ``equal``: the caller knows model and base are identical, ``delta`` is then not read.
    """
    dn = 0.0 if equal else float(delta.norm())
    if dn == 0.0:
        changed = 0  # a zero norm (no NaN) means every entry is exactly equal
    elif config.tol > 0:
        changed = int(torch.count_nonzero(delta.abs() > config.tol))
    else:
        changed = int(torch.count_nonzero(delta))
    if delta.ndim < 2:
        return None, changed
    if dn == 0.0:
        rel = 0.0  # no need for a pass over the base
    else:
        bn = float(base.norm())
        rel = dn / bn if bn > 0 else dn / 1e-12
    energy = (
        top_k_energy(delta, config.top_k, config.svd_max_dim, dn * dn)
        if delta.ndim == 2 and dn > 0
        else None
    )
    record = ModuleDelta(
        name=name,
        layer=layer_of(name),
        module_type=module_type_of(name),
        shape=tuple(delta.shape),
        rel_delta=rel,
        changed_fraction=changed / delta.numel() if delta.numel() else 0.0,
        top_k_energy=energy,
    )
    return record, changed


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class _Reader:
    """Safetensors tensors mapped one at a time, read-only, straight from the page cache.

    ``safe_open`` maps the whole file: every page it touches stays in the process's RSS until the
    handle closes, i.e. both checkpoints by the end. Here each tensor gets its own small read-only
    mapping, unmapped as soon as the tensor is dropped, so only the pair being compared is
    resident. No copy is made: comparing two tensors costs one pass over the page cache, faster
    than copying them out (``readinto`` into fresh buffers was about 3x slower).

    Float32 tensors are returned as views of **read-only memory: never modify them in place**
    (a write faults). Other dtypes are converted to a new float32 tensor.
    """

    def __init__(self, stack: ExitStack):
        self._stack = stack
        self._open: dict[Path, tuple[Any, int, dict[str, Any]]] = {}

    def _handle(self, file: Path) -> tuple[Any, int, dict[str, Any]]:
        entry = self._open.get(file)
        if entry is None:
            header = read_header(file)
            f = self._stack.enter_context(file.open("rb"))
            n = int.from_bytes(f.read(8), "little")
            entry = (f, 8 + n, header)
            self._open[file] = entry
        return entry

    def _map(self, info: TensorInfo) -> tuple[mmap.mmap | None, int, dict[str, Any]]:
        f, start, header = self._handle(info.file)
        meta = header[info.name]
        if meta["dtype"] not in _DTYPES:
            raise InputError(f"{info.file}: unsupported dtype {meta['dtype']} for {info.name}")
        begin, end = meta["data_offsets"]
        if end == begin:
            return None, 0, meta
        first = start + begin
        offset = first - first % mmap.ALLOCATIONGRANULARITY
        mapped = mmap.mmap(
            f.fileno(), first + (end - begin) - offset, access=mmap.ACCESS_READ, offset=offset
        )
        return mapped, first - offset, meta

    def get(self, info: TensorInfo) -> Tensor:
        """The tensor as float32 (read-only when stored as float32: see the class doc)."""
        mapped, skip, meta = self._map(info)
        dtype = _DTYPES[meta["dtype"]]
        if mapped is None:
            return torch.empty(meta["shape"], dtype=torch.float32)
        count = (len(mapped) - skip) // torch.empty((), dtype=dtype).element_size()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            flat = torch.frombuffer(mapped, dtype=dtype, offset=skip, count=count)
        return flat.reshape(meta["shape"]).float()

    def prefetch(self, info: TensorInfo) -> None:
        """Ask the kernel to start reading ``info`` from disk (a no-op where unsupported)."""
        mapped, _, _ = self._map(info)
        if mapped is not None and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
            mapped.madvise(mmap.MADV_WILLNEED)
        # dropping the mapping keeps what was read in the page cache, not in this process

    def pairs(
        self, items: list[tuple[str, TensorInfo, TensorInfo]]
    ) -> Iterator[tuple[str, Tensor, Tensor]]:
        """``(name, model tensor, base tensor)`` per item; the next pair is read ahead by the
        kernel while the caller works on the current one."""
        for i, (name, a, b) in enumerate(items):
            w_m, w_b = self.get(a), self.get(b)
            if i + 1 < len(items):
                self.prefetch(items[i + 1][1])
                self.prefetch(items[i + 1][2])
            yield name, w_m, w_b
            del w_m, w_b


def _summarize(
    modules: list[ModuleDelta], n_params: int, n_changed: int, adapter: bool, config: WeightsConfig
) -> WeightsResult:
    per_layer: dict[int, list[float]] = {}
    for m in modules:
        if m.layer is not None:
            per_layer.setdefault(m.layer, []).append(m.rel_delta)
    means = {layer: sum(v) / len(v) for layer, v in sorted(per_layer.items())}
    moved = sorted((lyr for lyr, v in means.items() if v > 0), key=lambda lyr: (-means[lyr], lyr))
    return WeightsResult(
        modules=tuple(modules),
        changed_fraction=n_changed / n_params if n_params else 0.0,
        most_changed_layers=tuple(moved[: config.n_most_changed]),
        layer_rel_delta=means,
        n_params=n_params,
        n_changed=n_changed,
        adapter=adapter,
        top_k=config.top_k,
    )


def _local_weights(source: ModelSource, what: str) -> Path:
    path = source.weights_dir
    if path is None:
        raise InputError(f"{source.ref}: {what} must be a local directory to compare weights")
    return path


def _check_same_tensors(
    model: dict[str, TensorInfo], base: dict[str, TensorInfo], base_dir: Path, model_dir: Path
) -> None:
    only_m = sorted(set(model) - set(base))
    only_b = sorted(set(base) - set(model))
    if only_m or only_b:
        which = (
            f"{only_m[0]} is in {model_dir} but not in the base"
            if only_m
            else f"{only_b[0]} is in the base but not in {model_dir}"
        )
        raise InputError(f"{base_dir}: base does not match the model: tensor {which}")
    for name, info in model.items():
        if base[name].shape != info.shape:
            raise InputError(
                f"{base_dir}: base does not match the model: {name} has shape "
                f"{list(base[name].shape)} in the base and {list(info.shape)} in {model_dir}"
            )


def compare_weights(
    model_dir: str | Path,
    base_dir: str | Path,
    config: WeightsConfig | None = None,
    gguf_file: str | None = None,
) -> WeightsResult:
    """Per-module deltas of ``model_dir`` (a checkpoint, a LoRA adapter or a GGUF file)
    against ``base_dir`` (``gguf_file``: see :func:`surgeon.loading.resolve_source`).

    Raises :class:`InputError` naming the base directory when tensor names or shapes differ.
    """
    config = config or WeightsConfig()
    base_src = resolve_source(base_dir, gguf_file=gguf_file)
    source = resolve_source(model_dir, base_dir, gguf_file)
    base_path = _local_weights(base_src, "the base")
    if source.kind == "adapter":
        assert source.path is not None
        return _compare_adapter(source.path, source.adapter_config, base_path, config)
    model_path = _local_weights(source, "the model")
    check_compatible(source, base_src)
    index_m, index_b = tensor_index(model_path), tensor_index(base_path)
    if not index_m:
        raise InputError(f"{model_path}: no safetensors weights to compare")
    _check_same_tensors(index_m, index_b, base_path, model_path)
    modules: list[ModuleDelta] = []
    n_params = n_changed = 0
    with ExitStack() as stack:
        reader = _Reader(stack)
        items = [(name, info, index_b[name]) for name, info in index_m.items()]
        for name, w_m, w_b in reader.pairs(items):
            if torch.equal(w_m, w_b):  # one pass that stops at the first difference
                record, changed = measure(name, w_m, w_b, config, equal=True)
            else:
                record, changed = measure(name, w_m - w_b, w_b, config)
            n_params += w_b.numel()
            n_changed += changed
            if record is not None:
                modules.append(record)
            del w_m, w_b
    return _summarize(modules, n_params, n_changed, False, config)


def _pattern_value(pattern: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's ``rank_pattern``/``alpha_pattern`` lookup: a key matching the module's tail."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_scaling(adapter_config: dict[str, Any], module: str, rank: int) -> float:
    """``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA) for one target module."""
    alpha = _pattern_value(
        adapter_config.get("alpha_pattern") or {}, module, adapter_config.get("lora_alpha", 8)
    )
    return alpha / math.sqrt(rank) if adapter_config.get("use_rslora") else alpha / rank


@dataclass(frozen=True)
class _AdapterEntry:
    """Where one adapted module's change lives in the adapter file."""

    lora: tuple[str, str, bool] | None
    """(A key, B key, is_embedding) of its LoRA pair."""
    replacement: str | None
    """Key of a full weight saved in the adapter (``modules_to_save``, saved embeddings)."""


def _adapter_entries(keys: list[str], file: Path) -> dict[str, _AdapterEntry]:
    """Base tensor name -> the adapter tensors that change it."""
    lora: dict[str, tuple[str, str, bool]] = {}
    replacement: dict[str, str] = {}
    present = set(keys)
    for key in keys:
        name = key.removeprefix(_PEFT_PREFIX)
        if ".lora_A." in name or name.endswith(".lora_embedding_A"):
            embedding = name.endswith(".lora_embedding_A")
            module = name.rsplit(".lora_embedding_A" if embedding else ".lora_A.", 1)[0]
            b_key = (
                key.removesuffix("_A") + "_B" if embedding else key.replace(".lora_A.", ".lora_B.")
            )
            if b_key not in present:
                raise InputError(f"{file}: {key} has no matching lora_B tensor")
            lora[f"{module}.weight"] = (key, b_key, embedding)
        elif ".lora_" in name or "lora_magnitude_vector" in name:
            continue
        else:
            replacement[name.replace(".base_layer.", ".")] = key
    return {
        name: _AdapterEntry(lora.get(name), replacement.get(name))
        for name in [*lora, *(n for n in replacement if n not in lora)]
    }


def _check_adapter(path: Path, adapter_config: dict[str, Any]) -> Path:
    file = path / "adapter_model.safetensors"
    if not file.exists():
        raise InputError(f"{path}: weight comparison needs adapter_model.safetensors")
    if adapter_config.get("use_dora"):
        raise InputError(f"{path}: DoRA adapters are not supported by the weight comparison")
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise InputError(f"{path}: only LoRA adapters can be compared weight by weight")
    read_header(file)
    return file


def _compare_adapter(
    path: Path, adapter_config: dict[str, Any], base_path: Path, config: WeightsConfig
) -> WeightsResult:
    """Deltas of a LoRA adapter: ``B @ A * scaling`` plus any full weights it saves."""
    file = _check_adapter(path, adapter_config)
    transpose = bool(adapter_config.get("fan_in_fan_out"))
    index_b = tensor_index(base_path)
    n_params = sum(math.prod(info.shape) for info in index_b.values())
    modules: list[ModuleDelta] = []
    n_changed = 0
    with ExitStack() as stack:
        reader = _Reader(stack)
        adapter = stack.enter_context(safe_open(str(file), framework="pt"))
        for name, entry in _adapter_entries(list(adapter.keys()), file).items():
            info = index_b.get(name)
            if info is None:
                raise InputError(
                    f"{base_path}: base does not match the adapter {path}: no tensor {name}"
                )
            w_b = reader.get(info)
            delta = torch.zeros_like(w_b)
            if entry.replacement is not None:
                saved = adapter.get_tensor(entry.replacement).float()
                if saved.shape != w_b.shape:
                    raise InputError(
                        f"{base_path}: base does not match the adapter {path}: {name} has shape "
                        f"{list(info.shape)} in the base and {list(saved.shape)} in the adapter"
                    )
                delta = saved - w_b
            if entry.lora is not None:
                a_key, b_key, embedding = entry.lora
                a, b = adapter.get_tensor(a_key).float(), adapter.get_tensor(b_key).float()
                module = name.removesuffix(".weight")
                lora = (b @ a) * lora_scaling(adapter_config, module, a.shape[0])
                lora = lora.T if embedding or transpose else lora
                if lora.shape != delta.shape:
                    raise InputError(
                        f"{base_path}: base does not match the adapter {path}: {name} has shape "
                        f"{list(info.shape)} in the base and {list(lora.shape)} in the adapter"
                    )
                delta = delta + lora
            record, changed = measure(name, delta, w_b, config)
            n_changed += changed
            if record is not None:
                modules.append(record)
    return _summarize(modules, n_params, n_changed, True, config)
