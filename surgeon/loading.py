"""Load any Hugging Face causal LM or PEFT adapter: the one loader the whole project uses.

Accepted references (conventions.md):

* a local HF directory: ``config.json`` plus safetensors weights (single or sharded); a
  ``pytorch_model.bin`` checkpoint is read only through transformers' weights-only load;
* a PEFT adapter directory (``adapter_config.json``): its base comes from ``base`` or the
  adapter's own ``base_model_name_or_path``; merged for probes, kept separate on request;
* a GGUF file (llama.cpp / Ollama), or a directory holding one (``gguf_file`` names it when
  there are several): dequantized once by transformers' GGUF loader into a cached safetensors
  directory (:mod:`surgeon.gguf`), which is then loaded like any model directory;
* a hub id (``org/name``) when the hub is reachable.

Every problem with the input is raised as :class:`InputError` with the path and what is wrong.
Input directories are only ever read.
"""

from __future__ import annotations

import json
import os
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
from surgeon.errors import OOM_ADVICE, InputError, RuntimeFailure
from surgeon.load_options import DTYPE_NAMES, LoadOptions, torch_dtype
from surgeon.progress import sync_library_bars
from surgeon.safetensors_io import (
    all_finite,
    check_files_readable,
    check_finite,
    non_finite_summary,
    read_header,
    tensor_index,
    weight_files,
)
from surgeon.tokens import TOKENIZER_FILES, context_length, prepare_tokenizer, tokenizer_limit

DTYPES = {name: torch_dtype(name) for name in DTYPE_NAMES}
GENERIC_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
SourceKind = Literal["hf_dir", "adapter", "hub", "gguf"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")
"""Files of a model directory that loading reads besides weights and tokenizer files."""
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
"""Files of a PEFT adapter directory that loading reads."""
CONFIG_INTS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "n_layer",
    "n_embd",
    "n_head",
    "n_positions",
    "n_inner",
    "head_dim",
)
"""Config fields that, when set, must be positive integers."""


@dataclass(frozen=True)
class ModelSource:
    """A validated model reference."""

    ref: str
    """What the user passed."""
    kind: SourceKind
    """Local HF directory, PEFT adapter directory, hub id or GGUF file."""
    path: Path | None
    """The local directory (None for a hub id; for a GGUF file, its cached conversion)."""
    base: ModelSource | None = None
    """For an adapter: the model it adapts."""
    adapter_config: dict[str, Any] = field(default_factory=dict)
    """For an adapter: its ``adapter_config.json``."""
    gguf: Path | None = None
    """For a GGUF input: the file itself (``path`` is its converted directory)."""

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
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, found a JSON {type(data).__name__}")
    return data


def _check_listable(path: Path) -> None:
    """The directory's entries must be readable (``os.scandir``, not the permission bits, so
    the check is the same for root)."""
    try:
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the directory ({exc.strerror or exc})") from None


def _present(directory: Path, names: tuple[str, ...]) -> list[Path]:
    return [directory / n for n in names if (directory / n).is_file()]


def _config_problem(exc: BaseException) -> str:
    """One line from a config validation error (the field's own message when there is one)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return _first_line(cause)


def check_config(path: Path) -> dict[str, Any]:
    """Read ``config.json`` and check its values' types before transformers sees them.

    Structural sizes (:data:`CONFIG_INTS`) must be positive integers when set, and a config of
    a family transformers knows must pass that family's own validation (types and consistency,
    e.g. ``hidden_size`` a multiple of the heads). Raises :class:`InputError` naming the file
    and the field.
    """
    data = _read_json(path)
    model_type = data.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise InputError(f"{path}: model_type must be text, got {model_type!r}")
    for cfg in (data, data.get("text_config")):
        if not isinstance(cfg, dict):
            continue
        for key in CONFIG_INTS:
            value = cfg.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{path}: field {key!r} must be a positive integer, got {value!r}")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if isinstance(model_type, str) and model_type in CONFIG_MAPPING:
        from huggingface_hub.errors import StrictDataclassError

        try:
            CONFIG_MAPPING[model_type].from_dict(dict(data))
        except (StrictDataclassError, TypeError, ValueError, KeyError, ZeroDivisionError) as exc:
            raise InputError(f"{path}: invalid model config ({_config_problem(exc)})") from None
    return data


def _chat_templates(directory: Path) -> list[tuple[Path, str]]:
    """Every chat template saved in a tokenizer directory, with the file it came from."""
    out: list[tuple[Path, str]] = []
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        try:
            out.append((jinja, jinja.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{jinja}: cannot read ({exc})") from None
    for name in ("chat_template.json", "tokenizer_config.json"):
        file = directory / name
        if not file.is_file():
            continue
        value = _read_json(file).get("chat_template")
        if isinstance(value, str):
            out.append((file, value))
        elif isinstance(value, list):
            out.extend(
                (file, t["template"]) for t in value if isinstance(t, dict) and "template" in t
            )
        elif value is not None:
            raise InputError(f"{file}: chat_template must be text or a list of named templates")
    return out


def check_tokenizer_files(directory: Path) -> None:
    """The tokenizer files of a directory must be readable and well formed.

    ``tokenizer.json`` must be a tokenizer the ``tokenizers`` library accepts, the JSON
    side files objects, and every chat template must compile. Raises :class:`InputError`
    naming the file.
    """
    files = _present(directory, TOKENIZER_FILES)
    check_files_readable(files)
    for name in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        if (directory / name).is_file():
            _read_json(directory / name)
    tok_json = directory / "tokenizer.json"
    if tok_json.is_file():
        _read_json(tok_json)
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_str(tok_json.read_text(encoding="utf-8"))
        except Exception as exc:  # the tokenizers library raises a bare Exception
            raise InputError(f"{tok_json}: not a valid tokenizer ({_first_line(exc)})") from None
    try:
        from jinja2 import TemplateError
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:  # pragma: no cover - transformers without its template helper
        return
    for file, template in _chat_templates(directory):
        try:
            _compile_jinja_template(template)
        except TemplateError as exc:
            raise InputError(f"{file}: chat template does not compile ({exc})") from None


def check_checkpoint_dir(path: Path) -> None:
    """A local full-model directory: a valid config, readable and well-formed weights and
    tokenizer files, every floating tensor finite (safetensors)."""
    _check_listable(path)
    if not (path / "config.json").exists():
        raise InputError(
            f"{path}: not a model directory (no config.json; expected a Hugging Face model "
            "directory or a PEFT adapter directory with adapter_config.json)"
        )
    check_files_readable(_present(path, MODEL_FILES))
    check_config(path / "config.json")
    files = weight_files(path)
    bins = sorted(path.glob("pytorch_model*.bin"))
    if not files and not bins:
        raise InputError(f"{path}: has config.json but no weights (*.safetensors or *.bin)")
    check_files_readable([*files, *bins])
    for file in files:
        read_header(file)
    check_tokenizer_files(path)
    for file in files:
        check_finite(file)


def _check_adapter_dir(path: Path) -> None:
    """A PEFT adapter directory: readable, well-formed and finite weights, own tokenizer files."""
    check_files_readable(_present(path, ADAPTER_FILES))
    if not any(path.glob("adapter_model.*")):
        raise InputError(f"{path}: adapter directory has no adapter_model weights")
    check_files_readable(sorted(path.glob("adapter_model.*")))
    safetensors = path / "adapter_model.safetensors"
    if safetensors.is_file():
        read_header(safetensors)
    check_tokenizer_files(path)
    if safetensors.is_file():
        check_finite(safetensors)


def resolve_source(
    ref: str | Path, base: str | Path | None = None, gguf_file: str | None = None
) -> ModelSource:
    """Validate a model reference without loading a model.

    Local directories are checked completely before anything runs: readable files, a valid
    config, well-formed safetensors, tokenizer files and chat templates, and every floating
    tensor finite (one streamed pass per safetensors file, not repeated in the same process).
    A GGUF reference (``gguf_file``: the file to take from a directory holding several) is
    converted into its cached safetensors directory on first use, and that directory is
    checked like any other. Raises :class:`InputError` naming the file and the problem.
    """
    ref_s = str(ref)
    if "\0" in ref_s:
        raise InputError(f"{ref_s!r}: model path contains an embedded null byte")
    path = Path(ref_s).expanduser()
    try:
        exists = path.exists()
    except OSError as exc:
        raise InputError(f"{path}: cannot access ({exc.strerror or exc})") from None
    if exists:
        from surgeon.gguf import find_gguf, resolve_gguf

        if path.is_dir():
            _check_listable(path)
        found = find_gguf(path, gguf_file)
        if found is not None:
            converted = resolve_gguf(found)
            assert converted is not None
            try:
                check_checkpoint_dir(converted)
            except InputError as exc:
                raise InputError(
                    f"{found}: converted to {converted}, which is bad: {exc}"
                ) from None
            return ModelSource(ref_s, "gguf", converted, gguf=found)
        if not path.is_dir():
            raise InputError(f"{path}: is a file, expected a model directory or a .gguf file")
        if (path / "adapter_config.json").exists():
            cfg = _read_json(path / "adapter_config.json")
            base_ref = base if base is not None else cfg.get("base_model_name_or_path")
            if not base_ref:
                raise InputError(
                    f"{path}: adapter does not record its base model; pass --base BASE"
                )
            if not isinstance(base_ref, (str, Path)):
                raise InputError(
                    f"{path / 'adapter_config.json'}: base_model_name_or_path must be text, "
                    f"got {base_ref!r}"
                )
            if base is None and (path / str(base_ref)).is_dir():
                # a relative record is relative to the adapter, so moved trees keep working
                base_ref = str(path / str(base_ref))
            _check_adapter_dir(path)
            base_source = resolve_source(base_ref, gguf_file=gguf_file)
            return ModelSource(ref_s, "adapter", path, base_source, cfg)
        check_checkpoint_dir(path)
        return ModelSource(ref_s, "hf_dir", path)
    if _looks_like_hub_id(ref_s) and "/" in ref_s and not Path(ref_s).is_absolute():
        return ModelSource(ref_s, "hub", None)
    raise InputError(f"{ref_s}: no such model directory")


def input_dirs(
    ref: str | Path, base: str | Path | None = None, gguf_file: str | None = None
) -> tuple[Path, ...]:
    """Every local directory a model reference reads: the model or adapter directory and,
    for an adapter, its base (``base``, else the one its config records), recursively; for a
    GGUF file, its converted directory in the cache.

    Pass them (for the model and for ``--base``) as the protected inputs of an output check,
    so ``--out`` can lie inside none of them. Validates the references like
    :func:`resolve_source`.
    """
    out: list[Path] = []
    source: ModelSource | None = resolve_source(ref, base, gguf_file)
    while source is not None:
        for item in (source.path, source.weights_dir if source.kind != "adapter" else None):
            if item is not None and item.resolve() not in [p.resolve() for p in out]:
                out.append(item)
        source = source.base
    return tuple(out)


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
    """The tokenizer of the model (an adapter's own, else its base's), left-padded with a pad
    token (a fresh object: see :func:`surgeon.tokens.prepare_tokenizer`)."""
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
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{ref}: cannot load the tokenizer ({_first_line(exc)})") from None
    return prepare_tokenizer(tok)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator (or host) out-of-memory error, however the library wrapped it."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    markers = ("out of memory", "can't allocate memory", "cublas_status_alloc_failed")
    return isinstance(exc, RuntimeError) and any(m in text.lower() for m in markers)


def out_of_memory(where: str, exc: BaseException | None = None) -> RuntimeFailure:
    """The exit-3 failure for running out of memory in ``where``, with :data:`OOM_ADVICE` and
    the first two sentences of the library's message (CUDA's runs on for a paragraph)."""
    first = _first_line(exc) if exc is not None and str(exc).strip() else ""
    detail = f" ({'. '.join(first.split('. ')[:2])})" if first else ""
    return RuntimeFailure(f"{where}: out of memory{detail}; {OOM_ADVICE}")


def _load_causal_lm(ref: str, options: LoadOptions) -> PreTrainedModel:
    config = _load_config(ref, options)
    kwargs: dict[str, Any] = {
        "dtype": options.resolved_dtype(config),
        "trust_remote_code": options.trust_remote_code,
    }
    if options.device_map:
        kwargs["device_map"] = options.device_map
    device = None if options.device_map else options.resolved_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, **kwargs)
        if device is not None:
            model.to(device)
    except (OSError, ValueError, KeyError, RuntimeError, MemoryError) as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(f"{ref}: loading the model", exc) from None
        raise InputError(f"{ref}: cannot load the model ({_first_line(exc)})") from None
    return model.eval()


def check_model_finite(model: torch.nn.Module, where: str) -> None:
    """Raise :class:`InputError` naming the first floating parameter of ``model`` that holds a
    NaN or an infinity (for weights no safetensors scan covered: ``.bin`` files, the hub)."""
    for name, param in model.named_parameters():
        if param.is_floating_point() and not all_finite(param.detach()):
            raise InputError(
                f"{where}: weight {name} holds non-finite values "
                f"({non_finite_summary(param.detach())}); the input weights must be finite"
            )


def _scanned(source: ModelSource) -> bool:
    """True when resolve_source streamed every weight of ``source`` (all safetensors)."""
    if source.kind == "hub" or source.path is None:
        return False
    if source.kind == "adapter":
        assert source.base is not None
        own = (source.path / "adapter_model.safetensors").is_file()
        return own and _scanned(source.base)
    return bool(weight_files(source.path))


def load_model(
    ref: str | Path,
    base: str | Path | None = None,
    options: LoadOptions | None = None,
    *,
    merge_adapter: bool = True,
) -> LoadedModel:
    """Load a model (or adapter on its base) for probing or repair.

    ``merge_adapter``: for an adapter, merge it into the base weights (probes); ``False`` keeps
    a ``PeftModel`` whose adapter can be switched off (reference policy, repairs). The
    tokenizer's ``model_max_length`` is the model's context (prompts longer are cut from the
    left by :func:`surgeon.tokens.encode`). Bad input: :class:`InputError`; running out of
    memory: :class:`RuntimeFailure` with :data:`OOM_ADVICE`.
    """
    options = options or LoadOptions()
    sync_library_bars()
    source = resolve_source(ref, base, options.gguf_file)
    weights_ref = source.weights_ref
    model = _load_causal_lm(weights_ref, options)
    if source.kind == "adapter":
        model = _attach_adapter(model, source, merge=merge_adapter)
    if not _scanned(source):
        check_model_finite(model, source.ref)
    tokenizer = load_tokenizer(source, options)
    limits = [n for n in (tokenizer_limit(tokenizer), context_length(model.config)) if n]
    if limits:
        tokenizer.model_max_length = min(limits)  # our own object, fresh from load_tokenizer
    return LoadedModel(model, tokenizer, source, ModelSpec.from_config(model.config))


def _attach_adapter(model: PreTrainedModel, source: ModelSource, merge: bool) -> PreTrainedModel:
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(source.path), is_trainable=not merge)
        return peft_model.merge_and_unload() if merge else peft_model  # type: ignore[return-value]
    except (RuntimeError, ValueError, KeyError, MemoryError) as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(f"{source.path}: attaching the adapter", exc) from None
        raise InputError(
            f"{source.path}: adapter does not fit base {source.weights_ref} ({_first_line(exc)})"
        ) from None


def load_judge_model(
    path: Path, options: LoadOptions
) -> tuple[Literal["classifier", "chat"], PreTrainedModel, PreTrainedTokenizerBase]:
    """A local judge: a sequence classifier when its config says so, else a causal chat model."""
    source = resolve_source(path, gguf_file=options.gguf_file)
    config = _load_config(source.weights_ref, options)
    archs = getattr(config, "architectures", None) or []
    tokenizer = load_tokenizer(source, options)
    if any("SequenceClassification" in a for a in archs):
        model = AutoModelForSequenceClassification.from_pretrained(source.weights_ref)
        return "classifier", model.to(options.resolved_device()).eval(), tokenizer
    return "chat", _load_causal_lm(source.weights_ref, options), tokenizer
