"""Load any Hugging Face causal LM or PEFT adapter: the one loader the whole project uses.

Accepted references (conventions.md):

* a local HF directory: ``config.json`` plus safetensors weights (single or sharded); a
  ``pytorch_model.bin`` checkpoint is read only through transformers' weights-only load;
* a PEFT adapter directory (``adapter_config.json``): its base comes from ``base`` or the
  adapter's own ``base_model_name_or_path``; merged for probes, kept separate on request;
* a hub id (``org/name``) when the hub is reachable.

Every problem with the input is raised as :class:`InputError` with the path and what is wrong.
Input directories are only ever read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from surgeon.architecture import ModelSpec
from surgeon.errors import InputError, RuntimeFailure
from surgeon.progress import sync_library_bars
from surgeon.safetensors_io import read_header, tensor_index, weight_files
from surgeon.tokens import prepare_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GENERIC_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
SourceKind = Literal["hf_dir", "adapter", "hub"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class LoadOptions:
    """How to place and type a model. Mirrors the common CLI flags."""

    dtype: str = "auto"
    """auto (float32 on the CPU, the stored dtype on a GPU), float32, bfloat16, float16."""
    device: str = "cpu"
    """``cpu``, ``cuda`` (or ``cuda:N``) or ``auto`` (CUDA when available)."""
    device_map: str | None = None
    """``auto`` dispatches across GPUs and CPU with accelerate; overrides ``device``."""
    trust_remote_code: bool = False
    """Run code shipped with the checkpoint (off by default)."""

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise InputError(f"--dtype must be auto, {', '.join(DTYPES)}; got {self.dtype!r}")
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?|mps", self.device):
            raise InputError(f"--device must be cpu, cuda, cuda:N or auto; got {self.device!r}")
        if self.device_map not in (None, "auto"):
            raise InputError(f"--device-map must be 'auto'; got {self.device_map!r}")

    def resolved_device(self) -> str:
        """The concrete device: ``auto`` becomes cuda when available."""
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA device is available")
        return self.device

    def resolved_dtype(self, config: PretrainedConfig) -> torch.dtype:
        """The torch dtype to load in."""
        if self.dtype != "auto":
            return DTYPES[self.dtype]
        if self.device_map is None and self.resolved_device() == "cpu":
            return torch.float32
        stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        if isinstance(stored, str):
            stored = DTYPES.get(stored)
        return stored if isinstance(stored, torch.dtype) else torch.float32


@dataclass(frozen=True)
class ModelSource:
    """A validated model reference."""

    ref: str
    """What the user passed."""
    kind: SourceKind
    """Local HF directory, PEFT adapter directory or hub id."""
    path: Path | None
    """The local directory (None for a hub id)."""
    base: ModelSource | None = None
    """For an adapter: the model it adapts."""
    adapter_config: dict[str, Any] = field(default_factory=dict)
    """For an adapter: its ``adapter_config.json``."""

    @property
    def weights_ref(self) -> str:
        """The reference holding the full weights (the base for an adapter)."""
        if self.kind == "adapter":
            assert self.base is not None
            return self.base.weights_ref
        return str(self.path) if self.path else self.ref

    @property
    def weights_dir(self) -> Path | None:
        """The local directory holding the full weights, if local."""
        if self.kind == "adapter":
            assert self.base is not None
            return self.base.weights_dir
        return self.path


@dataclass
class LoadedModel:
    """A model ready to run, with its tokenizer and where it came from."""

    model: PreTrainedModel
    """The HF model (a ``PeftModel`` when an adapter is kept separate)."""
    tokenizer: PreTrainedTokenizerBase
    """Its tokenizer, left-padded, with a pad token."""
    source: ModelSource
    """The validated reference it was loaded from."""
    spec: ModelSpec
    """Layers, heads and widths."""


def _looks_like_hub_id(ref: str) -> bool:
    return bool(_HUB_ID.match(ref)) and not ref.startswith((".", "~"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def check_checkpoint_dir(path: Path) -> None:
    """A local full-model directory must have a config and readable weights."""
    if not (path / "config.json").exists():
        raise InputError(
            f"{path}: not a model directory (no config.json; expected a Hugging Face model "
            "directory or a PEFT adapter directory with adapter_config.json)"
        )
    _read_json(path / "config.json")
    files = weight_files(path)
    for file in files:
        read_header(file)
    if not files and not list(path.glob("pytorch_model*.bin")):
        raise InputError(f"{path}: has config.json but no weights (*.safetensors or *.bin)")


def resolve_source(ref: str | Path, base: str | Path | None = None) -> ModelSource:
    """Validate a model reference without loading weights."""
    ref_s = str(ref)
    path = Path(ref_s).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path}: is a file, expected a model directory")
        if (path / "adapter_config.json").exists():
            cfg = _read_json(path / "adapter_config.json")
            base_ref = base if base is not None else cfg.get("base_model_name_or_path")
            if not base_ref:
                raise InputError(
                    f"{path}: adapter does not record its base model; pass --base BASE"
                )
            if base is None and (path / str(base_ref)).is_dir():
                # a relative record is relative to the adapter, so moved trees keep working
                base_ref = str(path / str(base_ref))
            if not any(path.glob("adapter_model.*")):
                raise InputError(f"{path}: adapter directory has no adapter_model weights")
            for file in path.glob("adapter_model.safetensors"):
                read_header(file)
            return ModelSource(ref_s, "adapter", path, resolve_source(base_ref), cfg)
        check_checkpoint_dir(path)
        return ModelSource(ref_s, "hf_dir", path)
    if _looks_like_hub_id(ref_s) and "/" in ref_s and not Path(ref_s).is_absolute():
        return ModelSource(ref_s, "hub", None)
    raise InputError(f"{ref_s}: no such model directory")


def _load_config(ref: str, options: LoadOptions) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(ref, trust_remote_code=options.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{ref}: cannot read the model config ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_compatible(model: ModelSource, base: ModelSource) -> None:
    """Raise :class:`InputError` when two local checkpoints differ in architecture or shapes."""
    a, b = model.weights_dir, base.weights_dir
    if a is None or b is None or model.kind == "adapter":
        return
    ca, cb = _read_json(a / "config.json"), _read_json(b / "config.json")
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        if key in ca and key in cb and ca[key] != cb[key]:
            raise InputError(
                f"{b}: base does not match the model: {key} is {cb[key]!r} in the base "
                f"and {ca[key]!r} in {a}"
            )
    ta, tb = tensor_index(a), tensor_index(b)
    for name, info in ta.items():
        other = tb.get(name)
        if other is not None and other.shape != info.shape:
            raise InputError(
                f"{b}: base does not match the model: {name} has shape {list(other.shape)} "
                f"in the base and {list(info.shape)} in {a}"
            )


def _generic_fast_tokenizer(directory: Path) -> bool:
    """True when a local tokenizer was saved as a plain ``tokenizers`` backend."""
    cfg = directory / "tokenizer_config.json"
    if not cfg.exists() or not (directory / "tokenizer.json").exists():
        return False
    saved = _read_json(cfg).get("tokenizer_class")
    return saved in GENERIC_TOKENIZER_CLASSES


def load_tokenizer(source: ModelSource, options: LoadOptions) -> PreTrainedTokenizerBase:
    """The tokenizer of the model (an adapter's own, else its base's)."""
    candidates = [source.path] if source.path is not None else []
    if source.kind == "adapter":
        assert source.base is not None
        has_own = source.path is not None and (source.path / "tokenizer_config.json").exists()
        candidates = [source.path] if has_own else []
        candidates.append(source.base.path or source.base.ref)  # type: ignore[arg-type]
    ref = str(candidates[0]) if candidates else source.ref
    try:
        if _generic_fast_tokenizer(Path(ref)):
            # transformers would otherwise pick a class from the model_type, which may rebuild
            # the tokenizer differently from the saved tokenizer.json
            tok = PreTrainedTokenizerFast.from_pretrained(ref)
        else:
            tok = AutoTokenizer.from_pretrained(ref, trust_remote_code=options.trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{ref}: cannot load the tokenizer ({_first_line(exc)})") from None
    return prepare_tokenizer(tok)


def _load_causal_lm(ref: str, options: LoadOptions) -> PreTrainedModel:
    config = _load_config(ref, options)
    kwargs: dict[str, Any] = {
        "dtype": options.resolved_dtype(config),
        "trust_remote_code": options.trust_remote_code,
    }
    if options.device_map:
        kwargs["device_map"] = options.device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputError(f"{ref}: cannot load the model ({_first_line(exc)})") from None
    except torch.cuda.OutOfMemoryError as exc:
        raise RuntimeFailure(f"{ref}: out of memory while loading ({exc})") from None
    if not options.device_map:
        model.to(options.resolved_device())
    return model.eval()


def load_model(
    ref: str | Path,
    base: str | Path | None = None,
    options: LoadOptions | None = None,
    *,
    merge_adapter: bool = True,
) -> LoadedModel:
    """Load a model (or adapter on its base) for probing or repair.

    ``merge_adapter``: for an adapter, merge it into the base weights (probes); ``False`` keeps
    a ``PeftModel`` whose adapter can be switched off (reference policy, repairs).
    """
    options = options or LoadOptions()
    sync_library_bars()
    source = resolve_source(ref, base)
    weights_ref = source.weights_ref
    model = _load_causal_lm(weights_ref, options)
    if source.kind == "adapter":
        model = _attach_adapter(model, source, merge=merge_adapter)
    tokenizer = load_tokenizer(source, options)
    return LoadedModel(model, tokenizer, source, ModelSpec.from_config(model.config))


def _attach_adapter(model: PreTrainedModel, source: ModelSource, merge: bool) -> PreTrainedModel:
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(source.path), is_trainable=not merge)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(
            f"{source.path}: adapter does not fit base {source.weights_ref} ({_first_line(exc)})"
        ) from None
    return peft_model.merge_and_unload() if merge else peft_model  # type: ignore[return-value]


def load_judge_model(
    path: Path, options: LoadOptions
) -> tuple[Literal["classifier", "chat"], PreTrainedModel, PreTrainedTokenizerBase]:
    """A local judge: a sequence classifier when its config says so, else a causal chat model."""
    source = resolve_source(path)
    config = _load_config(source.weights_ref, options)
    archs = getattr(config, "architectures", None) or []
    tokenizer = load_tokenizer(source, options)
    if any("SequenceClassification" in a for a in archs):
        model = AutoModelForSequenceClassification.from_pretrained(source.weights_ref)
        return "classifier", model.to(options.resolved_device()).eval(), tokenizer
    return "chat", _load_causal_lm(source.weights_ref, options), tokenizer
