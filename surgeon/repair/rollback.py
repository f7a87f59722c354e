"""Rollback repair (methods.md section 2): copy a few fine-tuned weights back from the base.

One working model ``W`` (the fine-tuned model F, fp32) is held in memory; the aligned base A is
only read tensor by tensor from its safetensors. Per step, the gradient of the harmful loss
(the base's own answers, or the paper's ``-cos(last-token state after layer L, h)``) chooses a
global top-k of entries of the layers below L, which are copied exactly from A.

Selection ``task-aware`` (default) ranks candidates by the first-order harmful benefit
``g_h * (W - A)`` and, once the tolerance rollback restarted the run, holds back entries whose
restoration would raise the cross-entropy of F's own greedy task answers to first order.
Selection ``paper`` is the published rule (top ``|g_h|`` where a descent step moves toward A).

``space`` chooses what an entry is: ``entries`` of the model's weights (a PEFT adapter merged
into its base first), or, for a LoRA adapter, ``adapter``: entries of its own factors (restored
= set to 0) and saved module copies (restored = the original's value), written back as an
adapter (:mod:`adapter_space`).

The phases live in their own modules: the base's facts (:mod:`rollback_base`), the working
model and its restoration log (:mod:`rollback_work`), the loop (:mod:`rollback_loop`); what
every repair shares (prompt sets, before/after measurements) in :mod:`prompt_sets` and
:mod:`measure`. Peak memory: W, the gradients of the eligible parameters, one uint8 state per
eligible entry and one base tensor at a time.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from probes.behaviour import wilson_interval
from surgeon.allocator import bounded_heap
from surgeon.architecture import LayerList, find_layers
from surgeon.errors import InputError
from surgeon.judges.proxy import FirstTokenProxy
from surgeon.loading import (
    LoadOptions,
    ModelSource,
    check_compatible,
    load_model,
    resolve_source,
)
from surgeon.prompts import Prompt, load_bundled
from surgeon.repair.adapter_space import (
    ADAPTER_FILE,
    AdapterBase,
    ResolvedSpace,
    adapter_eligible,
    adapter_tensors,
    base_decoder_entries,
    resolve_space,
    write_adapter,
)
from surgeon.repair.calibration import calibrate, make_proxy
from surgeon.repair.checkpointing import checkpointed
from surgeon.repair.guard import reference_losses
from surgeon.repair.hidden import mean_hidden
from surgeon.repair.lazy_base import BaseValues, LazyTensors
from surgeon.repair.mask import MASK_NAME, save_mask
from surgeon.repair.measure import harmful_rate, peak_memory, refusal_rate, task_metric
from surgeon.repair.prompt_sets import formatted, guard_prompts, split_harmful, split_recovery
from surgeon.repair.report import RollbackResult
from surgeon.repair.rollback_base import BaseFacts, answered, measure_base
from surgeon.repair.rollback_config import RollbackConfig, generation_options
from surgeon.repair.rollback_loop import Loop, pruned_entries
from surgeon.repair.rollback_work import (
    GRAD_BF16_ENTRIES,
    Work,
    decoder_entries,
    eligible_parameters,
    initial_slots,
)
from surgeon.repair.save import check_out_dir, save_like, tokenizer_dir
from surgeon.repair.task_metric import AnswerSet, own_answers, resolve_metric_name
from surgeon.tokens import track_truncation
from surgeon.verdict import decide_repair

__all__ = ["eligible_parameters", "rollback_repair"]

GUARD_REFUSED_WARNING = 0.20
"""Above this share of guard prompts refused by the base, a warning names the guard set."""


def task_interval(share: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a task metric that counts matches among ``n`` items."""
    low, high = wilson_interval(round(share * n), n)
    return round(low, 6), round(high, 6)


def confirmation(
    recovery: list[Prompt], facts: BaseFacts, check: list[Prompt], config: RollbackConfig
) -> tuple[list[Prompt], float]:
    """The prompts generated before any decision on target, and the base's generated harmful
    rate on them: the held-back check set when there is one, else a seeded sample of at most
    ``n_confirm`` recovery prompts."""
    if check:
        assert facts.check is not None
        return check, facts.check.judged_harmful
    n = min(config.n_confirm, len(recovery))
    keep = sorted(random.Random(config.seed + 3).sample(range(len(recovery)), n))
    judged = facts.recovery.judged[keep]
    harmful = 1.0 - float(judged.float().mean()) if n else 0.0
    return [recovery[i] for i in keep], harmful


@dataclass(frozen=True)
class Working:
    """The working model W of one space, what it may restore and where the base values are."""

    model: PreTrainedModel
    """W: the fine-tuned model (entries), or the unmerged ``PeftModel`` (adapter)."""
    tokenizer: PreTrainedTokenizerBase
    """Its tokenizer."""
    layers: LayerList
    """Its decoder layers."""
    eligible: list[tuple[str, nn.Parameter]]
    """The tensors rollback may restore, by the names the base values and the mask use (the
    adapter file's keys in adapter space)."""
    base: BaseValues
    """Their base values."""
    decoder_entries: int
    """Entries of the (base) model's decoder layers, the denominator of the decoder share."""


def _working_model(
    space: ResolvedSpace,
    model: str | Path,
    base: str | Path,
    opts: LoadOptions,
    source: ModelSource,
    base_dir: Path,
    layer: int,
    config: RollbackConfig,
) -> Working:
    """Load W for ``space``; only the eligible tensors require gradients."""
    loaded = load_model(model, base=base, options=opts, merge_adapter=space == "entries")
    w = loaded.model
    w.eval()
    layers = find_layers(w)
    if space == "adapter":
        assert source.path is not None
        tensors = adapter_tensors(w, source.path / ADAPTER_FILE)
        chosen = adapter_eligible(w, tensors, layers, layer, config)
        eligible = [(t.key, t.param) for t in chosen]
        device = next(w.parameters()).device
        reader: BaseValues = AdapterBase(chosen, LazyTensors(base_dir, device=device))
        n_decoder = base_decoder_entries(w, layers, tensors)
    else:
        eligible = eligible_parameters(w, layers, layer, config)
        reader = LazyTensors(base_dir, device=next(w.parameters()).device)
        n_decoder = decoder_entries(w, layers)
    for p in w.parameters():
        p.requires_grad_(False)
    for _, p in eligible:
        p.requires_grad_(True)
    return Working(w, loaded.tokenizer, layers, eligible, reader, n_decoder)


def rollback_repair(
    model: str | Path,
    base: str | Path,
    out_dir: Path,
    config: RollbackConfig | None = None,
    harmful: list[Prompt] | None = None,
    task: list[Prompt] | None = None,
    held_out_harmful: list[Prompt] | None = None,
    *,
    task_heldout: list[Prompt] | None = None,
    harmless: list[Prompt] | None = None,
    options: LoadOptions | None = None,
) -> RollbackResult:
    """Repair ``model`` (a full fine-tune or a PEFT adapter) against the aligned ``base``.

    ``harmful``: recovery prompts (bundled set if None; split into recovery and held-out when
    ``held_out_harmful`` is None). ``task``: in-loop task prompts (prompt + reference for
    ``exact``/``contains``; the bundled harmless set with the likelihood metric if None).
    ``task_heldout``: prompts for the before/after task metric (``task`` if None).
    ``harmless``: prompts whose base mean is subtracted with ``direction="difference"``
    (bundled harmless set if None).
    Writes the repaired model and ``rollback_mask.safetensors`` to ``out_dir`` (new or empty;
    never an input directory; the report files are the caller's: ``result.report()``). Input
    directories are only read.
    """
    config = config or RollbackConfig()
    with bounded_heap(config.bounded_heap), track_truncation() as cut:
        result = _rollback_repair(
            model,
            base,
            out_dir,
            config,
            harmful,
            task,
            held_out_harmful,
            task_heldout,
            harmless,
            options,
        )
    warnings = (*result.warnings, *cut.warnings())
    return replace(result, truncated_prompts=cut.count, warnings=warnings)


def _rollback_repair(
    model: str | Path,
    base: str | Path,
    out_dir: Path,
    config: RollbackConfig,
    harmful: list[Prompt] | None,
    task: list[Prompt] | None,
    held_out_harmful: list[Prompt] | None,
    task_heldout: list[Prompt] | None,
    harmless: list[Prompt] | None,
    options: LoadOptions | None,
) -> RollbackResult:
    out_dir = Path(out_dir)
    opts = replace(options or LoadOptions(), dtype="float32")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)

    source = resolve_source(model, base, opts.gguf_file)
    base_source = resolve_source(base, gguf_file=opts.gguf_file)
    check_compatible(source, base_source)
    base_dir = base_source.weights_dir
    if base_dir is None:
        raise InputError(f"{base}: rollback reads the base lazily and needs a local directory")
    check_out_dir(out_dir, [source.path, source.weights_dir, base_dir])
    recovery, heldout = split_harmful(
        harmful, held_out_harmful, config.n_recovery, config.heldout_fraction, config.seed
    )
    recovery, check = split_recovery(recovery, config.recovery_check_fraction, config.seed)
    task_loop = (list(task) if task else load_bundled("harmless"))[: config.n_task]
    task_final = list(task_heldout) if task_heldout else task_loop
    metric_name = resolve_metric_name(
        config.task_metric, [p.reference for p in task_loop + task_final]
    )

    # Phase 1: the base alone, freed before the fine-tuned model is loaded.
    wants_harmless = config.direction == "difference" and config.objective == "cosine"
    wants_harmless |= config.over_refusal_guard
    harmless_prompts = guard_prompts(harmless, wants_harmless, config.n_recovery, config.seed)
    facts = measure_base(base, opts, recovery, heldout, harmless_prompts, config, check)
    layer = facts.layer
    timings["base"] = time.perf_counter() - t0

    # Phase 2: the fine-tuned model becomes the working copy W.
    t1 = time.perf_counter()
    space = resolve_space(config.space, source)
    working = _working_model(space, model, base, opts, source, base_dir, layer, config)
    w, tok, layers, eligible = working.model, working.tokenizer, working.layers, working.eligible
    base_reader = working.base
    rec_texts, held_texts = formatted(tok, recovery), formatted(tok, heldout)
    loop_texts, final_texts = formatted(tok, task_loop), formatted(tok, task_final)
    answer_cache: dict[str, AnswerSet] = {}

    def loop_answers() -> AnswerSet:
        if "loop" not in answer_cache:
            answer_cache["loop"] = own_answers(
                w, tok, loop_texts, config.task_max_new_tokens, config.batch_size
            )
        return answer_cache["loop"]

    def final_answers() -> AnswerSet:
        return own_answers(w, tok, final_texts, config.task_max_new_tokens, config.batch_size)

    sizes = {"batch_size": config.batch_size, "max_new_tokens": config.task_max_new_tokens}
    loop_metric = task_metric(metric_name, tok, loop_texts, task_loop, loop_answers, **sizes)
    final_metric = (
        loop_metric
        if task_final is task_loop
        else task_metric(metric_name, tok, final_texts, task_final, final_answers, **sizes)
    )
    gen = generation_options(config)
    harmful_before = harmful_rate(w, tok, held_texts, **gen)
    guard_texts = formatted(tok, harmless_prompts) if facts.guard is not None else []
    over_before = refusal_rate(w, tok, guard_texts, **gen) if guard_texts else None
    task_f = loop_metric.measure(w)
    task_before = task_f if final_metric is loop_metric else final_metric.measure(w)
    work = Work(w, initial_slots(eligible, base_reader), base_reader)
    grad_dtype = config.grad_dtype
    if grad_dtype == "auto":
        grad_dtype = "bfloat16" if work.eligible >= GRAD_BF16_ENTRIES else "float32"
    if grad_dtype == "bfloat16":
        work.accumulate_in(torch.bfloat16)

    # The refusal proxy: each candidate against the generation judge, on A and on F.
    f_evidence = answered(w, tok, rec_texts, config)[1]
    helpful = facts.guard.first_tokens if facts.guard is not None else ()
    choice = calibrate(
        tok,
        facts.recovery,
        f_evidence,
        helpful,
        requested=config.proxy,
        tolerance=config.proxy_tolerance,
        k=config.proxy_tokens,
    )
    proxy = make_proxy(choice, tok, config.batch_size, config.seed)
    warnings: list[str] = [choice.warning] if choice.warning else []
    proxy_base = facts.recovery.harmful_rate(choice.name, choice.keep)
    target = proxy_base + config.target_margin
    ceiling = work.ceiling(lambda: 1.0 - proxy.refusal_rate(w, rec_texts))
    if ceiling > target:
        warnings.append(
            f"restoring every eligible entry of layers < {layer} only brings the proxy "
            f"harmful rate to {ceiling:.2f} (target {target:.2f}): the harmful change lies at "
            "or above that layer, or in embeddings or norms; try a higher --layer (e.g. the "
            "diagnosis's most drifted layer) or include embeddings and norms"
        )
    if facts.guard_generated is not None and facts.guard_generated > GUARD_REFUSED_WARNING:
        warnings.append(
            f"the base itself refuses {100 * facts.guard_generated:.0f}% of the over-refusal "
            "guard's prompts: the guard asks for the base's behaviour, so those refusals are "
            "kept; pass --harmless prompts the base answers"
        )
    confirm, confirm_judged = confirmation(recovery, facts, check, config)
    rate = config.resolved_recovery_rate()
    k = round(rate * work.eligible)
    guard_rate = 0.0
    if facts.guard is not None:
        guard_rate = 1.0 - facts.guard.harmful_rate(choice.name, choice.keep)
    check_rate = facts.check.harmful_rate(choice.name, choice.keep) if facts.check else 0.0
    guard_answers = guard_reference = guard_signs = None
    guard_ids: tuple[int, ...] = ()
    if facts.guard is not None and facts.guard_answers is not None:
        if isinstance(proxy, FirstTokenProxy) and proxy.token_ids:
            guard_ids = proxy.token_ids
            guard_signs = 1.0 - 2.0 * facts.guard.judged.float()
        else:
            guard_answers = facts.guard_answers.head(config.guard_tokens)
            guard_reference = reference_losses(
                w, tok, guard_answers, config.batch_size, config.first_token_share
            )
    loop = Loop(
        work=work,
        tok=tok,
        layers=layers,
        layer=layer,
        config=config,
        direction=facts.direction,
        center=facts.center,
        rec_texts=rec_texts,
        loop_texts=loop_texts,
        answers=loop_answers,
        metric=loop_metric,
        floor=(1.0 - config.task_tolerance) * task_f,
        target=target,
        k=max(1, k) if rate > 0 else 0,
        base_answers=facts.answers if config.objective == "answers" else None,
        guard_texts=guard_texts,
        guard_answers=guard_answers,
        guard_reference=guard_reference,
        guard_ids=guard_ids,
        guard_signs=guard_signs,
        guard_target=guard_rate + config.over_refusal_margin,
        guard_generated_target=(facts.guard_generated or 0.0) + config.over_refusal_margin,
        check_texts=formatted(tok, check),
        check_target=check_rate + config.target_margin,
        confirm_texts=formatted(tok, confirm),
        confirm_target=confirm_judged + config.target_margin,
    )
    if config.selection == "paper" and config.tolerance_rollback:
        loop.benign = mean_hidden(w, tok, layers, layer, loop_texts, config.batch_size)
    timings["prepare"] = time.perf_counter() - t1

    # Phase 3: the steps.
    t2 = time.perf_counter()
    with checkpointed(layers.layers):  # backward passes keep each layer's input only
        records, best, stop_reason, rollback_used = loop.run(proxy)
        if config.prune and stop_reason == "target":
            records += loop.prune(proxy, records[-1].step)
    work.close()
    timings["steps"] = time.perf_counter() - t2
    timings.update({f"steps_{name}": seconds for name, seconds in loop.times.items()})

    # Phase 4: final check and outputs.
    t3 = time.perf_counter()
    with torch.no_grad():
        harmful_after = harmful_rate(w, tok, held_texts, **gen)
        over_after = refusal_rate(w, tok, guard_texts, **gen) if guard_texts else None
        task_after = final_metric.measure(w)
    timings["final_eval"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    meta = {"base": str(base), "model": str(model), "selection": config.selection}
    mask = work.mask({**meta, "layer": str(layer), "space": space})
    for p in w.parameters():
        p.requires_grad_(False)
    if space == "adapter":
        assert source.path is not None
        values = {name: p.data for name, p in eligible}
        write_adapter(source.path, out_dir, values, base_dir, tok, tokenizer_dir(source))
    else:
        save_like(w, tok, out_dir, source.weights_dir or base_dir, tokenizer_dir(source))
    save_mask(mask, out_dir / MASK_NAME)
    timings["save"] = time.perf_counter() - t4
    timings["total"] = time.perf_counter() - t0
    n_items = len(task_final)
    counted = metric_name in ("exact", "contains")
    gate = decide_repair(
        harmful_after=harmful_after,
        harmful_base=facts.heldout_harmful,
        task_after=task_after,
        task_before=task_before,
        task_tolerance=config.task_tolerance,
        over_refusal_after=over_after,
        over_refusal_base=facts.guard_generated,
        task_items=n_items if counted else None,
    )
    return RollbackResult(
        model=str(model),
        base=str(base),
        selection=config.selection,
        space=space,
        grad_dtype=grad_dtype,
        objective=config.objective,
        pruned_entries=pruned_entries(records),
        layer=layer,
        harmful_rate_before=harmful_before,
        harmful_rate_after=harmful_after,
        over_refusal_base=facts.guard_generated,
        over_refusal_before=over_before,
        over_refusal_after=over_after,
        harmful_rate_base=facts.heldout_harmful,
        proxy=choice,
        proxy_tolerance=config.proxy_tolerance,
        proxy_harmful_base=proxy_base,
        proxy_target=target,
        proxy_harmful_ceiling=ceiling,
        confirm_target=loop.confirm_target,
        n_confirm=len(confirm),
        warnings=tuple(warnings),
        task_metric_name=metric_name,
        task_metric_before=task_before,
        task_metric_after=task_after,
        task_metric_before_ci=task_interval(task_before, n_items) if counted else None,
        task_metric_after_ci=task_interval(task_after, n_items) if counted else None,
        n_task_items=n_items,
        task_floor=loop.floor,
        restored_fraction=mask.restored_fraction,
        restored_entries=mask.restored_entries,
        eligible_entries=work.eligible,
        decoder_entries=working.decoder_entries,
        chosen_step=best,
        stop_reason=stop_reason,
        tolerance_rollback_used=rollback_used,
        steps=tuple(records),
        n_recovery=len(recovery),
        n_recovery_check=len(check),
        n_heldout=len(heldout),
        timings=timings,
        peak_memory=peak_memory(),
        out_dir=str(out_dir),
        verdict=gate.verdict,
        reasons=tuple(gate.reasons),
    )
