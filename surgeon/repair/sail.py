"""SAIL repair (methods.md section 3): LoRA on the focal layers, trained with token-weighted DPO.

The phases, each in its own module:

1. the prompt sets (:mod:`sail_inputs`): training, check and held-out conflicts (held-out
   ones never enter training), held-out harmful and harmless prompts, optional task prompts;
2. the base alone, freed before the model is loaded: its held-out figures, its check-split
   rate (the early stop's target) and its answers to the training prompts (chosen responses);
3. the model: placement (:mod:`sail_lora`, the focal probe for ``auto``), its held-out figures
   before, its own answers (rejected responses, :mod:`sail_pairs`) or the user's preference
   file (:mod:`sail_data`), a fresh LoRA adapter, one reference pass with the adapter
   disabled (reference log-probs, focal attention), the loop (:mod:`sail_train`, the loss in
   :mod:`sail_loss`), its held-out figures after, the outputs and the gate
   (:func:`surgeon.verdict.decide_sail`).

Peak memory: one model plus a rank-8 adapter and its AdamW state; ``reference`` weights also
load the base beside the model for one scoring pass over the pairs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from probes.focal import FocalConfig
from surgeon.conflicts import ConflictItem
from surgeon.errors import InputError
from surgeon.generation import generate
from surgeon.loading import LoadOptions, check_compatible, load_model, resolve_source
from surgeon.prompts import Prompt
from surgeon.repair.measure import peak_memory, release_memory
from surgeon.repair.prompt_sets import formatted
from surgeon.repair.sail_config import SailConfig
from surgeon.repair.sail_data import PreferencePair, encode_pairs
from surgeon.repair.sail_eval import (
    EvalSets,
    conflict_answers,
    harmful_check,
    measure_model,
    task_metric_name,
    violation_rate,
)
from surgeon.repair.sail_inputs import SailInputs, sail_inputs
from surgeon.repair.sail_lora import attach_lora, place, reference_tokens, trainable_parameters
from surgeon.repair.sail_output import save_outputs
from surgeon.repair.sail_pairs import conflict_pairs, guard_pairs, refusal_pairs
from surgeon.repair.sail_result import PairCounts, SailResult
from surgeon.repair.sail_train import make_accelerator, token_data, train
from surgeon.repair.save import check_out_dir
from surgeon.tokens import context_length, pad_token_id, tokenizer_limit, track_truncation
from surgeon.verdict import decide_sail

__all__ = ["sail_repair"]


def sail_repair(
    model: str | Path,
    base: str | Path | None,
    out_dir: Path,
    config: SailConfig | None = None,
    *,
    conflicts: Sequence[ConflictItem] | None = None,
    conflicts_heldout: Sequence[ConflictItem] | None = None,
    preferences: Sequence[PreferencePair] | None = None,
    preferences_file: str | None = None,
    harmful: Sequence[Prompt] | None = None,
    harmful_heldout: Sequence[Prompt] | None = None,
    harmless: Sequence[Prompt] | None = None,
    harmless_train: Sequence[Prompt] | None = None,
    task: Sequence[Prompt] | None = None,
    options: LoadOptions | None = None,
) -> SailResult:
    """Repair ``model`` (a full model or a PEFT adapter) with SAIL; ``base``: the aligned model
    whose answers are preferred (optional; without it, chosen responses are built).

    ``conflicts``: training conflicts (bundled set if None; split when ``conflicts_heldout`` is
    None). ``preferences``: the user's pairs instead of built ones (``preferences_file`` names
    them in the report). ``harmful`` / ``harmful_heldout``: harmful prompts (recovery and
    held-out for ``target="harmful"``, else only measured). ``harmless``: prompts whose
    refusal is over-refusal. ``harmless_train``: the guard pairs' harmless prompts
    (``harmful``; a share of ``harmless`` if None). ``task``: prompts with references for a
    task metric. Writes ``adapter/`` (and ``merged/`` with ``config.merge``) into ``out_dir``
    (new or empty; never an input directory); the report files are the caller's
    (``result.report()``).
    """
    config = config or SailConfig()
    with track_truncation() as cut:
        inputs = sail_inputs(
            config,
            conflicts=conflicts,
            conflicts_heldout=conflicts_heldout,
            harmful=harmful,
            harmful_heldout=harmful_heldout,
            harmless=harmless,
            harmless_train=harmless_train,
            task=task,
        )
        result = _sail(model, base, Path(out_dir), config, inputs, preferences, options)
    pairs = replace(result.pairs, file=preferences_file) if preferences is not None else None
    return replace(
        result,
        pairs=pairs or result.pairs,
        truncated_prompts=cut.count,
        warnings=(*result.warnings, *cut.warnings()),
    )


def _generate(model: torch.nn.Module, tok: object, prompts: Sequence[Prompt], config: SailConfig):
    if not prompts:
        return []
    return generate(
        model,  # type: ignore[arg-type]
        tok,  # type: ignore[arg-type]
        formatted(tok, prompts),  # type: ignore[arg-type]
        max_new_tokens=config.max_new_tokens,
        batch_size=config.eval_batch_size,
        seed=config.seed,
        desc="answers to train on",
    )


def _answers(
    model: torch.nn.Module, tok: object, inputs: SailInputs, config: SailConfig
) -> tuple[list[str], list[str]]:
    """Greedy answers to the training prompts of the config's target (and to the guard's
    harmless prompts for ``harmful``)."""
    if config.target == "conflict":
        answers = conflict_answers(model, tok, inputs.train_conflicts, config)  # type: ignore[arg-type]
        return answers, []
    harmful = _generate(model, tok, inputs.train_harmful, config)
    return harmful, _generate(model, tok, inputs.train_harmless, config)


def _check_rate(model: torch.nn.Module, tok: object, inputs: SailInputs, config: SailConfig):
    """The check split's rate (violations, or harm), None without a check split."""
    if config.target == "conflict":
        if not inputs.check_conflicts:
            return None
        return violation_rate(model, tok, inputs.check_conflicts, config)  # type: ignore[arg-type]
    if not inputs.check_harmful:
        return None
    return harmful_check(model, tok, inputs.check_harmful, config)  # type: ignore[arg-type]


def _pairs(
    inputs: SailInputs,
    config: SailConfig,
    model_answers: tuple[list[str], list[str]],
    base_answers: tuple[list[str], list[str]] | None,
) -> tuple[list[PreferencePair], PairCounts]:
    """The built pairs and their counts (refusal and guard pairs for ``harmful``)."""
    base_main = None if base_answers is None else base_answers[0]
    if config.target == "conflict":
        sets = [conflict_pairs(inputs.train_conflicts, model_answers[0], base_main)]
        n_prompts = len(inputs.train_conflicts)
    else:
        base_guard = None if base_answers is None else base_answers[1]
        sets = [
            refusal_pairs(inputs.train_harmful, model_answers[0], base_main),
            guard_pairs(inputs.train_harmless, model_answers[1], base_guard),
        ]
        n_prompts = len(inputs.train_harmful) + len(inputs.train_harmless)
    counts = PairCounts(
        source="built",
        file=None,
        n_prompts=n_prompts,
        chosen_from_base=sum(p.from_base for p in sets),
        chosen_from_model=sum(p.from_model for p in sets),
        chosen_built=sum(p.built for p in sets),
        guard_pairs=0 if len(sets) == 1 else len(sets[1].pairs),
        skipped_already_good=sum(p.already_good for p in sets),
        skipped_no_chosen=sum(p.no_chosen for p in sets),
    )
    return [pair for p in sets for pair in p.pairs], counts


def _sail(
    model: str | Path,
    base: str | Path | None,
    out_dir: Path,
    config: SailConfig,
    inputs: SailInputs,
    preferences: Sequence[PreferencePair] | None,
    options: LoadOptions | None,
) -> SailResult:
    opts = options or LoadOptions()
    accelerator = make_accelerator(opts.resolved_device())
    if accelerator.num_processes > 1:
        if opts.device_map is not None:
            raise InputError("--device-map cannot be combined with accelerate launch processes")
        opts = replace(opts, device=str(accelerator.device))
    if config.weighting == "reference" and base is None:
        raise InputError("--weighting reference needs --base BASE (the aligned model's tokens)")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    source = resolve_source(model, base)
    protected = [source.path, source.weights_dir]
    if base is not None:
        base_source = resolve_source(base)
        check_compatible(source, base_source)
        protected += [base_source.path, base_source.weights_dir]
    check_out_dir(out_dir, protected)
    sets = EvalSets(inputs.heldout_conflicts, inputs.heldout_harmful, inputs.harmless, inputs.task)
    metric_name = task_metric_name(config, inputs.task)
    build = preferences is None
    warnings: list[str] = []

    # Phase 1: the base alone.
    base_measures = base_answers = check_base = None
    if base is not None:
        loaded = load_model(base, options=opts)
        bm, btok = loaded.model, loaded.tokenizer
        base_measures = measure_model(bm, btok, sets, config)
        check_base = _check_rate(bm, btok, inputs, config)
        if build:
            base_answers = _answers(bm, btok, inputs, config)
        del loaded, bm
        release_memory()
    timings["base"] = time.perf_counter() - t0

    # Phase 2: the model, its placement, figures before and the pairs.
    t1 = time.perf_counter()
    loaded = load_model(model, base=base, options=opts, merge_adapter=True)
    m, tok = loaded.model, loaded.tokenizer
    for p in m.parameters():
        p.requires_grad_(False)
    model_params = sum(p.numel() for p in m.parameters())
    probe = FocalConfig(
        rule=config.focal_rule, top_k=config.focal_top_k, batch_size=config.eval_batch_size
    )
    placement = place(m, tok, config.focal_layers, inputs.train_conflicts, probe)
    before = measure_model(m, tok, sets, config)
    if build:
        pairs, counts = _pairs(inputs, config, _answers(m, tok, inputs, config), base_answers)
    else:
        pairs, counts = list(preferences or ()), PairCounts("file", None)
    limits = [n for n in (context_length(m.config), tokenizer_limit(tok)) if n is not None]
    encoded, dropped = encode_pairs(
        tok,
        pairs,
        max_length=min(limits) if limits else None,
        max_response_tokens=config.max_response_tokens,
    )
    counts = replace(counts, dropped_too_long=len(dropped))
    if not encoded:
        why = (
            "every pair is longer than the model's context"
            if pairs
            else ("the model already obeys every training prompt, or no chosen response exists")
        )
        raise InputError(f"SAIL has no preference pairs to train on: {why}")
    if config.weighting == "attention":
        no_system = sum(p.system_span is None for p in encoded)
        if no_system:
            warnings.append(
                f"{no_system} of {len(encoded)} pairs have no system message: their tokens get "
                "uniform weights (the attention weighting reads attention to the system span)"
            )
    timings["prepare"] = time.perf_counter() - t1

    # Phase 3: the adapter, the reference pass and the steps.
    t2 = time.perf_counter()
    torch.manual_seed(config.seed)
    peft = attach_lora(m, placement, config.lora_r, config.lora_alpha, config.lora_dropout)
    trainable = trainable_parameters(peft)
    heads = placement.heads if config.weighting == "attention" else None
    reference = reference_tokens(peft, tok, encoded, heads=heads, batch_size=config.eval_batch_size)
    base_tokens = None
    if config.weighting == "reference":
        assert base is not None
        scorer = load_model(base, options=opts)
        base_tokens = reference_tokens(
            scorer.model, tok, encoded, heads=None, batch_size=config.eval_batch_size,
            disable_adapter=False, desc="base pass",
        )  # fmt: skip
        del scorer
        release_memory()
    data = token_data(
        encoded,
        reference,
        config.weighting,
        base=base_tokens,
        alpha=config.reference_alpha,
        beta=config.beta,
    )
    target = (check_base or 0.0) + config.check_margin

    def check() -> float:
        rate = _check_rate(peft, tok, inputs, config)
        return 0.0 if rate is None else rate

    has_check = bool(
        inputs.check_conflicts if config.target == "conflict" else inputs.check_harmful
    )
    outcome = train(
        peft,
        data,
        config,
        accelerator,
        pad_token_id(tok),
        check=check if has_check else None,
        target=target,
    )
    timings["steps"] = time.perf_counter() - t2

    # Phase 4: figures after, outputs, the gate.
    t3 = time.perf_counter()
    after = measure_model(peft, tok, sets, config)
    timings["final_eval"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    if source.kind == "adapter":
        warnings.append(
            "the model is a PEFT adapter: adapter/ applies to it merged onto its base; use "
            "--merge for a standalone repaired model"
        )
    if accelerator.is_main_process:
        save_outputs(peft, tok, out_dir, source, merge=config.merge)
    accelerator.wait_for_everyone()
    timings["save"] = time.perf_counter() - t4
    timings["total"] = time.perf_counter() - t0
    gate = decide_sail(
        target=config.target,
        violation_before=before.violation_rate,
        violation_after=after.violation_rate,
        harmful_before=before.harmful_rate,
        harmful_after=after.harmful_rate,
        over_refusal_before=before.over_refusal,
        over_refusal_after=after.over_refusal,
        harmful_base=None if base_measures is None else base_measures.harmful_rate,
        task_before=before.task,
        task_after=after.task,
        task_tolerance=config.task_tolerance,
    )
    return SailResult(
        model=str(model),
        base=None if base is None else str(base),
        target=config.target,
        weighting=config.weighting,
        beta=config.beta,
        placement=placement,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        trainable_params=trainable,
        model_params=model_params,
        n_pairs=len(encoded),
        pairs=counts,
        n_check=len(
            inputs.check_conflicts if config.target == "conflict" else inputs.check_harmful
        ),
        n_heldout_conflicts=len(inputs.heldout_conflicts),
        n_heldout_harmful=len(inputs.heldout_harmful),
        n_harmless=len(inputs.harmless),
        before=before,
        after=after,
        base_measures=base_measures,
        task_metric_name=metric_name,
        check_rate_base=check_base,
        check_target=target,
        stop_reason=outcome.stop_reason,
        steps=outcome.steps,
        processes=accelerator.num_processes,
        verdict=gate.verdict,
        reasons=tuple(gate.reasons),
        merged=config.merge,
        out_dir=str(out_dir),
        warnings=tuple(warnings),
        timings=timings,
        peak_memory=peak_memory(),
    )
