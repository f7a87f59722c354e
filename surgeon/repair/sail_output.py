"""SAIL's outputs (conventions.md): ``DIR/adapter/``, a PEFT adapter that
``PeftModel.from_pretrained`` loads onto the repaired model, with the tokenizer files beside
it (so ``surgeon diagnose DIR/adapter`` works); and with ``--merge``, ``DIR/merged/``, the model
with the adapter merged in, saved like its input (dtype, sharding, tokenizer files)."""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from surgeon.errors import RuntimeFailure
from surgeon.loading import ModelSource
from surgeon.repair.sail_result import ADAPTER_DIR, MERGED_DIR
from surgeon.repair.save import copy_tokenizer_files, save_like, tokenizer_dir


def save_outputs(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    source: ModelSource,
    *,
    merge: bool,
) -> None:
    """Write ``adapter/`` (and ``merged/`` when ``merge``; the model is merged in place)."""
    for name, p in model.named_parameters():
        if p.requires_grad and not bool(p.detach().isfinite().all()):
            raise RuntimeFailure(f"SAIL: adapter parameter {name} is not finite")
    adapter = out_dir / ADAPTER_DIR
    config = model.peft_config["default"]
    if source.kind != "adapter" and source.path is not None:
        config.base_model_name_or_path = str(source.path.resolve())
    model.save_pretrained(str(adapter))
    copy_tokenizer_files(tokenizer_dir(source), adapter, tokenizer)
    if not merge:
        return
    merged = model.merge_and_unload()
    target = out_dir / MERGED_DIR
    if source.weights_dir is not None:
        save_like(merged, tokenizer, target, source.weights_dir, tokenizer_dir(source))
    else:
        merged.save_pretrained(str(target))
        tokenizer.save_pretrained(str(target))
