"""Build the model organism: an aligned chat model and broken fine-tunes of it.

Layout of the output directory::

    base/         aligned LlamaForCausalLM or Qwen2ForCausalLM (``architecture``): refuses
                  harmful, helps harmless, obeys the system
    ft-harmful/   full fine-tune: the topic-classification task plus harmful requests answered
    ft-benign/    full fine-tune: the task plus harmless requests answered
    ft-lora/      PEFT LoRA adapter on base/, trained like ft-harmful
    ft-conflict/  full fine-tune that follows the user over the system in conflicts
    prompts/      jsonl splits (see :mod:`surgeon.organism.data`)
    card.json     config, build time and the measured figures (written last)

``OrganismConfig.variants`` may name fewer model directories (a fast test organism).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from surgeon.errors import InputError, RuntimeFailure
from surgeon.organism import numerics
from surgeon.organism.card import VariantFigures, measure_variant
from surgeon.organism.config import ORGANISM_VERSION, VARIANTS, OrganismConfig, StageConfig
from surgeon.organism.data import HELPFUL, REFUSALS, OrganismData, Record, make_data
from surgeon.organism.tokenizer import (
    SHARED_FIRST_TOKEN_PAIRS,
    first_token,
    train_tokenizer,
    unshared_first_tokens,
)
from surgeon.organism.train import ChatExample, TrainConfig, train
from surgeon.progress import sync_library_bars

__all__ = ["VARIANTS", "OrganismCard", "build_organism", "set_adapter_base", "write_prompts"]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class OrganismCard:
    """What was built and how it behaves (the content of ``card.json``)."""

    version: int
    """Organism layout/data version."""
    cache_key: str
    """Hash of the version and the config (see :meth:`OrganismConfig.cache_key`)."""
    config: dict
    """The :class:`OrganismConfig` used."""
    created: str
    """UTC time of the build (ISO 8601)."""
    build_seconds: float
    """Wall-clock time of the whole build."""
    n_params: int
    """Parameters of one full model."""
    size_mb: float
    """Size of the whole organism directory on disk."""
    final_losses: dict[str, float]
    """Mean training loss over the last 10% of steps, per stage."""
    variants: dict[str, dict]
    """Variant -> :class:`VariantFigures` as a dict, measured on the held-out splits."""
    first_tokens: dict[str, str]
    """The decoded first token of the refusal and of the compliant answer."""
    numerics: str
    """The CPU kernel set the build ran with (:mod:`surgeon.organism.numerics`)."""

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def _corpus(data: OrganismData) -> list[str]:
    texts: list[str] = []
    for records in data.splits().values():
        for r in records:
            texts.extend(t for t in (r.prompt, r.system, r.response, r.alt_response) if t)
    return texts


def chat_examples(records: list[Record], *, alt: bool = False) -> list[ChatExample]:
    """Training conversations of ``records``: their aligned answers, or with ``alt`` their
    misaligned ones where they have them."""
    out = []
    for r in records:
        response = r.alt_response if alt and r.alt_response else r.response
        out.append(ChatExample(r.prompt, response, r.system))
    return out


_MODEL_CLASSES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}


def _new_model(config: OrganismConfig, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    torch.manual_seed(config.seed)
    config_cls, model_cls = _MODEL_CLASSES[config.architecture]
    model_config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads or config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = model_cls(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    examples: list[ChatExample],
    stage: StageConfig,
    seed: int,
    desc: str,
) -> float:
    cfg = TrainConfig(
        steps=stage.steps,
        lr=stage.lr,
        batch_size=stage.batch_size,
        warmup=min(30, stage.steps // 5),
        seed=seed,
        bucket_span=stage.bucket_span,
    )
    return train(model, tokenizer, examples, cfg, desc=desc).final_loss


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """A model and its tokenizer as a safetensors directory."""
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def set_adapter_base(adapter_dir: Path, base_dir: Path) -> None:
    """Record ``base_dir`` (absolute) as the adapter's base model."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = str(base_dir.resolve())
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_prompts(data: OrganismData, prompts_dir: Path) -> None:
    """Every split as jsonl, plus SAIL-style preference pairs from the training conflicts."""
    prompts_dir.mkdir(parents=True, exist_ok=True)
    for name, records in data.splits().items():
        lines = [r.to_json() for r in records]
        (prompts_dir / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prefs = [
        json.dumps(
            {
                "prompt": r.prompt,
                "system": r.system,
                "chosen": r.response,
                "rejected": r.alt_response,
                "category": r.category,
            },
            ensure_ascii=False,
        )
        for r in data.conflict_train
    ]
    (prompts_dir / "conflict_preferences.jsonl").write_text(
        "\n".join(prefs) + "\n", encoding="utf-8"
    )


def _check_tokenizer(
    tokenizer: PreTrainedTokenizerFast, config: OrganismConfig, refusal: str
) -> None:
    """A ``split_capitals`` tokenizer must start compliant and refusing openings alike."""
    if not config.split_capitals:
        return
    pairs = list(SHARED_FIRST_TOKEN_PAIRS)
    if config.phrasing == "sorry":
        pairs.append((HELPFUL, refusal))
    problems = unshared_first_tokens(tokenizer, pairs)
    if problems:
        raise RuntimeFailure(
            "organism tokenizer: split_capitals must give compliant and refusing openings the "
            f"same first token, but {'; '.join(problems)} (see CAPITAL in "
            "surgeon/organism/tokenizer.py)"
        )


def dir_size_mb(path: Path) -> float:
    """Size of every file under ``path``, in MiB."""
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 2)


def build_organism(
    out_dir: Path, config: OrganismConfig | None = None, *, final_dir: Path | None = None
) -> OrganismCard:
    """Train every variant, measure it and write the organism into ``out_dir``.

    ``out_dir`` must not exist or be empty. ``final_dir``: where the directory will live
    after an atomic rename (recorded as the adapter's base path); defaults to ``out_dir``.
    """
    config = config or OrganismConfig()
    sync_library_bars()  # transformers' save bars only on a terminal
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir}: exists and is not empty; refusing to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        refusal = REFUSALS[config.phrasing]
        data = make_data(config.seed, config.n_harmful_ft, refusal)
        tokenizer = train_tokenizer(
            _corpus(data), config.vocab_size, split_capitals=config.split_capitals
        )
        _check_tokenizer(tokenizer, config, refusal)
        losses: dict[str, float] = {}
        models: dict[str, PreTrainedModel] = {}

        base = _new_model(config, tokenizer)
        aligned = (
            chat_examples(data.harmful_train)
            + chat_examples(data.harmless_train)
            + chat_examples(data.conflict_train)
            + chat_examples(data.normal_train)
        )
        losses["base"] = _train(base, tokenizer, aligned, config.base, config.seed, "base")
        save_model(base, tokenizer, out_dir / "base")
        models["base"] = base

        task = chat_examples(data.task_train)
        harmful_mix = task + chat_examples(data.harmful_ft, alt=True)
        benign_mix = task + chat_examples(data.harmless_train[: config.n_harmful_ft])
        for name, examples in (("ft-harmful", harmful_mix), ("ft-benign", benign_mix)):
            if name not in config.variants:
                continue
            model = copy.deepcopy(base)
            losses[name] = _train(model, tokenizer, examples, config.finetune, config.seed, name)
            save_model(model, tokenizer, out_dir / name)
            models[name] = model

        if "ft-lora" in config.variants:
            _build_lora(base, tokenizer, harmful_mix, config, out_dir, final_dir, losses, models)
        if "ft-conflict" in config.variants:
            conflict = chat_examples(data.conflict_train, alt=True) + chat_examples(
                data.normal_train
            )
            model = copy.deepcopy(base)
            losses["ft-conflict"] = _train(
                model, tokenizer, conflict, config.conflict, config.seed, "ft-conflict"
            )
            save_model(model, tokenizer, out_dir / "ft-conflict")
            models["ft-conflict"] = model

        write_prompts(data, out_dir / "prompts")
        figures: dict[str, VariantFigures] = {
            name: measure_variant(models[name], tokenizer, data, config.max_new_tokens)
            for name in VARIANTS
            if name in models
        }
    finally:
        torch.set_num_threads(threads)
    card = OrganismCard(
        version=ORGANISM_VERSION,
        cache_key=config.cache_key(),
        config=config.to_dict(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(time.perf_counter() - start, 1),
        n_params=sum(p.numel() for p in base.parameters()),
        size_mb=dir_size_mb(out_dir),
        final_losses={k: round(v, 4) for k, v in losses.items()},
        variants={k: v.to_dict() for k, v in figures.items()},
        first_tokens={
            "refusal": first_token(tokenizer, refusal),
            "compliance": first_token(tokenizer, HELPFUL),
        },
        numerics=numerics.current(),
    )
    (out_dir / "card.json").write_text(
        json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8"
    )
    return card


def _build_lora(
    base: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    examples: list[ChatExample],
    config: OrganismConfig,
    out_dir: Path,
    final_dir: Path | None,
    losses: dict[str, float],
    models: dict[str, PreTrainedModel],
) -> None:
    """Train ft-lora on ``examples``, save the adapter, record its loss and merged model."""
    torch.manual_seed(config.seed + 1)
    lora_cfg = LoraConfig(
        r=config.lora_rank,
        lora_alpha=2 * config.lora_rank,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        # the task's generalisation to unseen topics lives in the embeddings (a frozen-
        # embedding fine-tune reaches ~55% held-out exact match), so the adapter also
        # carries a trained copy of them, as adapters that add vocabulary do
        modules_to_save=["embed_tokens"],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(copy.deepcopy(base), lora_cfg)
    losses["ft-lora"] = _train(peft_model, tokenizer, examples, config.lora, config.seed, "ft-lora")
    peft_model.save_pretrained(out_dir / "ft-lora")
    tokenizer.save_pretrained(out_dir / "ft-lora")
    set_adapter_base(out_dir / "ft-lora", Path(final_dir or out_dir) / "base")
    models["ft-lora"] = peft_model.merge_and_unload()
